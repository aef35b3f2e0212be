#!lua
-- recover: one id from the running list of a worker presumed dead.
--
-- KEYS[1] gm:{wg:G}:job:<id>           HASH   the record
-- KEYS[2] gm:{wg:G}:running:<dead>     LIST   ids the dead worker held
-- KEYS[3] gm:{wg:G}:ready              LIST   due jobs
-- KEYS[4] gm:{wg:G}:completed          ZSET   completed ids
-- KEYS[5] gm:{wg:G}:logs:<id>          STREAM the job's logs
-- KEYS[6] gm:{wg:G}:done:<id>          LIST   wakes waiters
-- KEYS[7] gm:{wg:G}:events             STREAM lifecycle events
-- KEYS[8] gm:{wg:G}:attempts:<id>      LIST   attempt history
-- KEYS[9] gm:{wg:G}:ix:status:running   ZSET  listing index a running job leaves
-- KEYS[10] gm:{wg:G}:ix:status:queued   ZSET  ... and the one it joins when re-queued,
-- KEYS[11] gm:{wg:G}:ix:status:failure  ZSET  ... or when it fails (no restart left),
-- KEYS[12] gm:{wg:G}:ix:status:canceled ZSET  ... or when its cancel is honoured
-- KEYS[13] gm:{wg:G}:ixtrim             ZSET  completed jobs' index entries, for the trim
-- KEYS[14..19] gm:{wg:G}:ix:by:<created_by>:live, ix:as:<permissioned_as>:live,
--              ix:by:<created_by>:failure, ix:as:<permissioned_as>:failure,
--              ix:by:<created_by>:canceled, ix:as:<permissioned_as>:canceled   ZSET
-- ARGV[1] job id
-- ARGV[2] dead worker id
-- ARGV[3] now (epoch ms)
-- ARGV[4] max restarts
-- ARGV[5] retention in seconds
-- ARGV[6] TTL of the done list in seconds
-- ARGV[7] events stream cap
-- ARGV[8] error (msgpack) written when no restart is left
--
-- Returns 'requeued' (back at the head of ready, one restart counted),
-- 'failed' (completed as failure with WorkerLost: it was already restarted
-- max-restarts times), 'canceled' (a cancel was requested: it is honoured
-- instead of a restart) or 'dropped' (the id is not that worker's any more;
-- nothing else changes). Conditional on the record and on the id still being
-- in the dead worker's list, so two schedulers never recover a job twice.

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
-- A completed job leaves its identities' live sets for their `final` ones (keys
-- by_live, as_live, by_final, as_final), and its index entries are recorded for the
-- retention trim. `ix` is the record's ix field (nil: the job predates the indexes).
local function finish(job_key, ix, id_keys, trim_key, completed_at, final)
  if not ix then
    return
  end
  local m = string.match(ix, '^[^\t]*')
  redis.call('ZREM', id_keys[1], m)
  redis.call('ZREM', id_keys[2], m)
  redis.call('ZADD', id_keys[3], 0, m)
  redis.call('ZADD', id_keys[4], 0, m)
  local who = redis.call('HMGET', job_key, 'created_by', 'permissioned_as')
  redis.call('ZADD', trim_key, completed_at, ix .. '\tstatus:' .. final .. '\tby:' ..
             (who[1] or '') .. ':' .. final .. '\tas:' .. (who[2] or '') .. ':' .. final)
end

if redis.call('LREM', KEYS[2], 0, ARGV[1]) == 0 then
  return 'dropped'
end
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'restarts', 'cancel_requested',
                       'attempt', 'started_at')
local status, worker = cur[1], cur[2]
local restarts = tonumber(cur[3] or '0')

if status == 'queued' then
  -- Taken off ready but never started: put it back, nothing was used.
  redis.call('LPUSH', KEYS[3], ARGV[1])
  return 'requeued'
end
if status ~= 'running' or worker ~= ARGV[2] then
  return 'dropped'
end

local outcome = 'lost'
local final = nil
if cur[4] then
  final = 'canceled'
elseif restarts >= tonumber(ARGV[4]) then
  final = 'failure'
end
redis.call('RPUSH', KEYS[8], cmsgpack.pack({
  attempt = tonumber(cur[5] or '0'), worker = worker, status = outcome,
  started_at = tonumber(cur[6] or '0'), completed_at = tonumber(ARGV[3]),
}))
if final then
  redis.call('HSET', KEYS[1], 'status', final, 'completed_at', ARGV[3])
  if final == 'failure' then
    redis.call('HSET', KEYS[1], 'error', ARGV[8])
  end
  redis.call('HDEL', KEYS[1], 'claim')
  local to, ids = KEYS[11], {KEYS[14], KEYS[15], KEYS[16], KEYS[17]}
  if final == 'canceled' then
    to, ids = KEYS[12], {KEYS[14], KEYS[15], KEYS[18], KEYS[19]}
  end
  finish(KEYS[1], move_status(KEYS[1], KEYS[9], to), ids, KEYS[13], ARGV[3], final)
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[5], ARGV[5])
  redis.call('EXPIRE', KEYS[8], ARGV[5])
  redis.call('LPUSH', KEYS[6], final)
  redis.call('EXPIRE', KEYS[6], ARGV[6])
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[7], '*', 'event', 'completed', 'id', ARGV[1],
             'status', final)
  if final == 'failure' then
    return 'failed'
  end
  return 'canceled'
end
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HDEL', KEYS[1], 'worker', 'claim')
redis.call('HINCRBY', KEYS[1], 'restarts', 1)
move_status(KEYS[1], KEYS[9], KEYS[10])
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[7], '*', 'event', 'requeued', 'id', ARGV[1],
           'worker', ARGV[2])
return 'requeued'
