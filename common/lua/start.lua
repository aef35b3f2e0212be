#!lua
-- start: a worker took a job id off ready (BLMOVE); mark the job running.
--
-- KEYS[1] gm:{wg:G}:job:<id>           HASH   the record
-- KEYS[2] gm:{wg:G}:running:<worker>   LIST   ids the worker holds
-- KEYS[3] gm:{wg:G}:events             STREAM lifecycle events
-- KEYS[4] gm:{wg:G}:ix:status:queued   ZSET   listing index the job leaves
-- KEYS[5] gm:{wg:G}:ix:status:running  ZSET   listing index the job joins
-- ARGV[1] job id
-- ARGV[2] worker id
-- ARGV[3] now (epoch ms)
-- ARGV[4] claim: a fresh fencing token for this attempt
-- ARGV[5] events stream cap
--
-- Returns the record (HGETALL) when the job is now running under this claim,
-- or false when it is gone or no longer queued (canceled while it waited):
-- then the id is dropped from the running list. Safe to call again with the
-- same claim after a lost reply.

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

local cur = redis.call('HMGET', KEYS[1], 'status', 'claim')
if cur[1] == 'running' and cur[2] == ARGV[4] then
  return redis.call('HGETALL', KEYS[1])
end
if cur[1] ~= 'queued' then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
  return false
end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[3], 'worker', ARGV[2],
           'claim', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempt', 1)
move_status(KEYS[1], KEYS[4], KEYS[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'event', 'started', 'id', ARGV[1],
           'worker', ARGV[2])
return redis.call('HGETALL', KEYS[1])
