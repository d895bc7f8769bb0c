-- Admission of a batch of requests: for each, the rate limits (concurrency, then each requests-a-minute
-- window) and the credit hold, checked before anything is written, so a refusal leaves nothing behind.
--
-- ARGV[1]: a JSON array of [L, H] pairs, one per request:
--   L = {p, slot, conc, ttl, window, bucket, windows = {{bucket, rpm}, ...}}
--   H = {p, hold, amount, limit, ttl, acct, key}   (amounts as decimal strings, nano-dollars)
-- Returns one answer per request, in order:
--   {0, reason, limit, 0, reset_ms}          refused by a limit
--   {1, reason, limit, remaining, reset_ms}  admitted, hold placed
--   {2, available, 'account'|'key'}          the hold does not fit (nothing taken)
--   {-1} / {-2}                              the account's / key's live figure is not loaded yet
--
-- Keys (all under the prefix p): conc:<bucket> and rpm:<bucket> (sorted sets), acct:<id> and key:<hash>
-- (hashes: bal, held, used), hold:<id> (hash), holds (sorted set by expiry). They are not declared in
-- KEYS: one call carries many accounts' requests (one EVALSHA a batch is what made Redis affordable on the
-- hot path), and expired holds found in `holds` are released by name. So this script, like the gateway,
-- runs on a single Redis, not a cluster.

local clock = redis.call('TIME') local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local function one(L, H)
  local lim_ck = L.p .. 'conc:' .. L.bucket
  redis.call('ZREMRANGEBYSCORE', lim_ck, '-inf', now)
  local lim_busy = redis.call('ZCARD', lim_ck)
  if lim_busy >= L.conc then return {0, 'concurrency', L.conc, 0, now + 1000} end
  local lim_ok = nil
  for _, w in ipairs(L.windows) do
    local rk = L.p .. 'rpm:' .. w[1]
    redis.call('ZREMRANGEBYSCORE', rk, '-inf', now - L.window)
    local count = redis.call('ZCARD', rk)
    local oldest = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
    local reset = (oldest[2] and tonumber(oldest[2]) or now) + L.window
    if count >= w[2] then return {0, 'rpm', w[2], 0, reset} end
    if not lim_ok then lim_ok = {1, 'rpm', w[2], w[2] - count - 1, reset} end
  end
  lim_ok = lim_ok or {1, 'concurrency', L.conc, L.conc - lim_busy - 1, now}

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

  for _, w in ipairs(L.windows) do
    local rk = L.p .. 'rpm:' .. w[1]
    redis.call('ZADD', rk, now, L.slot)
    redis.call('PEXPIRE', rk, L.window)
  end
  redis.call('ZADD', lim_ck, now + L.ttl, L.slot)
  redis.call('PEXPIRE', lim_ck, L.ttl)

  if hold_key ~= '' then redis.call('HINCRBY', hold_kk, 'held', H.amount) end
  redis.call('HINCRBY', hold_ak, 'held', H.amount)
  redis.call('HSET', H.p .. 'hold:' .. H.hold, 'a', H.acct, 'k', hold_key, 'n', H.amount)
  redis.call('ZADD', hold_set, now + H.ttl, H.hold)
  return lim_ok
end
local out = {}
for i, item in ipairs(cjson.decode(ARGV[1])) do out[i] = one(item[1], item[2]) end
return out
