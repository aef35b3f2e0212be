#!lua
-- retry: a failed attempt that its retry policy allows again goes back to the queue.
--
-- KEYS[1] gm:{wg:G}:job:<id>           HASH   the record
-- KEYS[2] gm:{wg:G}:running:<worker>   LIST   ids the worker holds
-- KEYS[3] gm:{wg:G}:scheduled          ZSET   future jobs
-- KEYS[4] gm:{wg:G}:ready              LIST   due jobs
-- KEYS[5] gm:{wg:G}:wake               LIST   nudge for the promoter
-- KEYS[6] gm:{wg:G}:events             STREAM lifecycle events
-- KEYS[7] gm:{wg:G}:attempts:<id>      LIST   attempt history
-- KEYS[8] gm:{wg:G}:ix:status:running  ZSET   listing index the job leaves
-- KEYS[9] gm:{wg:G}:ix:status:queued   ZSET   listing index the job joins
-- ARGV[1] job id
-- ARGV[2] worker id
-- ARGV[3] claim token of the failed attempt
-- ARGV[4] now (epoch ms)
-- ARGV[5] when the next attempt may start (epoch ms)
-- ARGV[6] events stream cap
-- ARGV[7] the failed attempt's history entry (msgpack)
-- ARGV[8] the failed attempt's error (msgpack), kept on the record until the next outcome
--
-- Returns 1 when re-queued, 0 when refused (not this worker's current attempt).

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
redis.call('HSET', KEYS[1], 'status', 'queued', 'scheduled_for', ARGV[5], 'error', ARGV[8])
redis.call('HDEL', KEYS[1], 'worker', 'claim')
redis.call('HINCRBY', KEYS[1], 'retries', 1)
move_status(KEYS[1], KEYS[8], KEYS[9])
redis.call('RPUSH', KEYS[7], ARGV[7])
redis.call('LREM', KEYS[2], 0, ARGV[1])
local at = tonumber(ARGV[5])
if at <= tonumber(ARGV[4]) then
  redis.call('RPUSH', KEYS[4], ARGV[1])
else
  local head = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  redis.call('ZADD', KEYS[3], at, ARGV[1])
  if head[2] == nil or at < tonumber(head[2]) then
    redis.call('DEL', KEYS[5])
    redis.call('LPUSH', KEYS[5], ARGV[5])
  end
end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'event', 'retrying', 'id', ARGV[1],
           'at', ARGV[5])
return 1
