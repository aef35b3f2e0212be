-- recover: one id from the running list of a worker presumed dead.
--
-- KEYS[1] gm:{wg:G}:job:<id>           HASH   the record
-- KEYS[2] gm:{wg:G}:running:<dead>     LIST   ids the dead worker held
-- KEYS[3] gm:{wg:G}:ready              LIST   due jobs
-- KEYS[4] gm:{wg:G}:completed          ZSET   completed ids
-- KEYS[5] gm:{wg:G}:logs:<id>          STREAM the job's logs
-- KEYS[6] gm:{wg:G}:done:<id>          LIST   wakes waiters
-- KEYS[7] gm:{wg:G}:events             STREAM lifecycle events
-- ARGV[1] job id
-- ARGV[2] dead worker id
-- ARGV[3] now (epoch ms)
-- ARGV[4] max restarts
-- ARGV[5] retention in seconds
-- ARGV[6] TTL of the done list in seconds
-- ARGV[7] events stream cap
-- ARGV[8] error (msgpack) written when no restart is left
--
-- Returns 'requeued' (back at the head of ready), 'failed' (completed as
-- failure with WorkerLost: it already ran 1 + max restarts times) or 'dropped'
-- (the job is not that worker's any more; only removed from its list).
-- Conditional on the record, so two schedulers never recover a job twice.

local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt')
local status, worker, attempt = cur[1], cur[2], tonumber(cur[3] or '0')
if redis.call('LREM', KEYS[2], 0, ARGV[1]) == 0 then
  -- Not in the dead worker's list (any more): another scheduler got here first.
  return 'dropped'
end

if status == 'queued' then
  -- Taken off ready but never started: put it back, no attempt was used.
  redis.call('LPUSH', KEYS[3], ARGV[1])
  return 'requeued'
end
if status ~= 'running' or worker ~= ARGV[2] then
  return 'dropped'
end
if attempt > tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'status', 'failure', 'completed_at', ARGV[3], 'error', ARGV[8])
  redis.call('HDEL', KEYS[1], 'claim')
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[5], ARGV[5])
  redis.call('LPUSH', KEYS[6], 'failure')
  redis.call('EXPIRE', KEYS[6], ARGV[6])
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[7], '*', 'event', 'completed', 'id', ARGV[1],
             'status', 'failure')
  return 'failed'
end
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HDEL', KEYS[1], 'worker', 'claim')
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[7], '*', 'event', 'requeued', 'id', ARGV[1],
           'worker', ARGV[2])
return 'requeued'
