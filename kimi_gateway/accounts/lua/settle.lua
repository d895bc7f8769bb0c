-- Settlement of one hold (journal recovery, a clean stop): as finish.lua does for a batch, without the
-- concurrency slot. ARGV[1] = {p, hold, cost, acct, key}. Returns 1.

local S = cjson.decode(ARGV[1])

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
return 1
