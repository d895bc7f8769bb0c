-- A recharge or voucher reaches the live balance, if Redis has loaded it (otherwise the next admission
-- loads it from the ledger, recharge included). ARGV = prefix, account id, amount (nano-dollars).

local ak = ARGV[1] .. 'acct:' .. ARGV[2]
if redis.call('HEXISTS', ak, 'bal') == 1 then redis.call('HINCRBY', ak, 'bal', ARGV[3]) end
return 1
