-- complete: write the final outcome of a job's attempt, fenced by worker and claim.
--
-- KEYS[1] gm:{wg:G}:job:<id>           HASH   the record
-- KEYS[2] gm:{wg:G}:running:<worker>   LIST   ids the worker holds
-- KEYS[3] gm:{wg:G}:completed          ZSET   completed ids by completed_at
-- KEYS[4] gm:{wg:G}:logs:<id>          STREAM the job's logs
-- KEYS[5] gm:{wg:G}:done:<id>          LIST   wakes waiters
-- KEYS[6] gm:{wg:G}:events             STREAM lifecycle events
-- KEYS[7] gm:{wg:G}:attempts:<id>      LIST   one msgpack entry per finished attempt
-- ARGV[1] job id
-- ARGV[2] worker id
-- ARGV[3] claim token of the attempt
-- ARGV[4] now (epoch ms)
-- ARGV[5] retention in seconds (TTL of the record, its logs and attempts)
-- ARGV[6] TTL of the done list in seconds
-- ARGV[7] events stream cap
-- ARGV[8] final status: success | failure | canceled
-- ARGV[9] this attempt's history entry (msgpack)
-- ARGV[10..] result fields: field, value, ...
--
-- Returns 1 when completed now, 2 when this claim had already completed it (a
-- retried call after a lost reply), 0 when refused: the job's current attempt
-- is not this worker's claim (it was presumed dead and the job moved on).

if #KEYS ~= 7 or #ARGV < 9 or #ARGV % 2 ~= 1 then
  -- Checked before any write: a script that fails midway keeps what it wrote.
  return redis.error_reply('ERR complete.lua: wrong number of keys or arguments')
end
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'claim')
if cur[2] ~= ARGV[2] or cur[3] ~= ARGV[3] then
  return 0
end
if cur[1] ~= 'running' then
  if cur[1] == 'success' or cur[1] == 'failure' or cur[1] == 'canceled' then
    return 2
  end
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[8], 'completed_at', ARGV[4])
if #ARGV >= 10 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 10))
end
local cut = redis.call('HMGET', KEYS[1], 'log_dropped_lines', 'log_dropped_bytes', 'attempt')
if cut[1] then
  redis.call('XADD', KEYS[4], '*', 'a', cut[3] or '0', 't', ARGV[4],
             's', 'stderr', 'l', '[gristmill: ' .. cut[1] .. ' log lines (' .. cut[2] ..
             ' bytes) beyond the log limit were dropped]')
end
redis.call('RPUSH', KEYS[7], ARGV[9])
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[4], ARGV[5])
redis.call('EXPIRE', KEYS[7], ARGV[5])
redis.call('LPUSH', KEYS[5], ARGV[8])
redis.call('EXPIRE', KEYS[5], ARGV[6])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[7], '*', 'event', 'completed', 'id', ARGV[1],
           'status', ARGV[8])
return 1
