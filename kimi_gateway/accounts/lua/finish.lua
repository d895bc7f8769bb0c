-- Settlement of a batch of finished requests: each hold closed at its cost (0 releases it; settling twice
-- changes nothing) and each concurrency slot freed.
--
-- ARGV[1]: a JSON array of [S, R] pairs: S = {p, hold, cost, acct, key}, R = {p, bucket, slot}.
-- Returns 1 per request. Keys: hold:<id>, holds, settled:<id>, acct:<id>, key:<hash>, conc:<bucket>;
-- not declared in KEYS, for the reason given in admit.lua.

local clock = redis.call('TIME') local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local function one(S, R)
  local settled = S.p .. 'settled:' .. S.hold
  if redis.call('EXISTS', settled) == 0 then
    local hk = S.p .. 'hold:' .. S.hold
    local h = redis.call('HMGET', hk, 'k', 'n')
    if h[2] then
      if h[2] ~= '0' then  -- '-0' is not an integer to Redis
        redis.call('HINCRBY', S.p .. 'acct:' .. S.acct, 'held', '-' .. h[2])
        if h[1] ~= '' then redis.call('HINCRBY', S.p .. 'key:' .. h[1], 'held', '-' .. h[2]) end
      end
      redis.call('DEL', hk)
      redis.call('ZREM', S.p .. 'holds', S.hold)
    end
    if tonumber(S.cost) > 0 then
      local ak = S.p .. 'acct:' .. S.acct
      if redis.call('HEXISTS', ak, 'bal') == 1 then redis.call('HINCRBY', ak, 'bal', '-' .. S.cost) end
      local kk = S.p .. 'key:' .. S.key
      if S.key ~= '' and redis.call('HEXISTS', kk, 'used') == 1 then
        redis.call('HINCRBY', kk, 'used', S.cost)
      end
    end
    redis.call('SET', settled, 1, 'EX', 86400)
  end
  redis.call('ZREM', R.p .. 'conc:' .. R.bucket, R.slot)
  return 1
end
local out = {}
for i, item in ipairs(cjson.decode(ARGV[1])) do out[i] = one(item[1], item[2]) end
return out
