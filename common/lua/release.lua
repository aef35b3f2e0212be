#!lua
-- release: a stopping worker gives back a job it could not finish within its grace period.
--
-- KEYS[1] gm:{wg:G}:job:<id>           HASH   the record
-- KEYS[2] gm:{wg:G}:running:<worker>   LIST   ids the worker holds
-- KEYS[3] gm:{wg:G}:ready              LIST   due jobs
-- KEYS[4] gm:{wg:G}:events             STREAM lifecycle events
-- KEYS[5] gm:{wg:G}:attempts:<id>      LIST   attempt history
-- KEYS[6] gm:{wg:G}:ix:status:running  ZSET   listing index the job leaves
-- KEYS[7] gm:{wg:G}:ix:status:queued   ZSET   listing index the job joins
-- ARGV[1] job id
-- ARGV[2] worker id
-- ARGV[3] claim token of the attempt
-- ARGV[4] events stream cap
-- ARGV[5] the interrupted attempt's history entry (msgpack)
--
-- The job goes back to the head of ready. No retry and no restart is counted:
-- the job did not fail, its worker was asked to stop.
-- Returns 1 when released, 0 when refused (not this worker's current attempt).

-- Moves the job's listing-index member (from the record's `ix` field) between status sets.
local function move_status(job_key, from_key, to_key)
  local ix = redis.call('HGET', job_key, 'ix')
  if ix then
    local m = string.match(ix, '^[^\t]*')
    redis.call('ZREM', from_key, m)
    redis.call('ZADD', to_key, 0, m)
  end
  return ix
end

local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'claim')
if cur[1] ~= 'running' or cur[2] ~= ARGV[2] or cur[3] ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HDEL', KEYS[1], 'worker', 'claim')
move_status(KEYS[1], KEYS[6], KEYS[7])
redis.call('RPUSH', KEYS[5], ARGV[5])
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'event', 'released', 'id', ARGV[1],
           'worker', ARGV[2])
return 1
