-- Grows an open hold by H.amount, if it fits: the checks of admit.lua, then the hold grows in place, so
-- settling it later releases (or charges against) the whole amount. ARGV[1] = H as in admit.lua.
-- Returns {1} (grown, or the hold is already gone), {2, available, by}, or {-1}/{-2} as admit.lua.

local clock = redis.call('TIME') local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local H = cjson.decode(ARGV[1])
if redis.call('EXISTS', H.p .. 'hold:' .. H.hold) == 0 then return {1} end

local hold_set = H.p .. 'holds'
for _, id in ipairs(redis.call('ZRANGEBYSCORE', hold_set, '-inf', now, 'LIMIT', 0, 100)) do
  local h = redis.call('HMGET', H.p .. 'hold:' .. id, 'a', 'k', 'n')
  if h[3] and h[3] ~= '0' then  -- '-0' is not an integer to Redis
    redis.call('HINCRBY', H.p .. 'acct:' .. h[1], 'held', '-' .. h[3])
    if h[2] ~= '' then redis.call('HINCRBY', H.p .. 'key:' .. h[2], 'held', '-' .. h[3]) end
  end
  redis.call('DEL', H.p .. 'hold:' .. id)
  redis.call('ZREM', hold_set, id)
end
local hold_amount = tonumber(H.amount)
local hold_ak = H.p .. 'acct:' .. H.acct
local hold_bal = redis.call('HGET', hold_ak, 'bal')
if not hold_bal then return {-1} end
local hold_available = tonumber(hold_bal) - tonumber(redis.call('HGET', hold_ak, 'held') or '0')
if hold_available < 0 or hold_amount > hold_available then return {2, hold_available, 'account'} end
local hold_kk = H.p .. 'key:' .. H.key
local hold_key = ''
if H.key ~= '' and H.limit ~= '' then
  local used = redis.call('HGET', hold_kk, 'used')
  if not used then return {-2} end
  local left = tonumber(H.limit) - tonumber(used) - tonumber(redis.call('HGET', hold_kk, 'held') or '0')
  if hold_amount > left then return {2, left, 'key'} end
  hold_key = H.key
end

if hold_key ~= '' then redis.call('HINCRBY', hold_kk, 'held', H.amount) end
redis.call('HINCRBY', hold_ak, 'held', H.amount)
redis.call('HINCRBY', H.p .. 'hold:' .. H.hold, 'n', H.amount)
return {1}
