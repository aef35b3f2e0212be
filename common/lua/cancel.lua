#!lua
-- cancel: cancel a queued job at once, or ask the worker running it to stop it.
--
-- KEYS[1] gm:{wg:G}:job:<id>           HASH   the record
-- KEYS[2] gm:{wg:G}:scheduled          ZSET   future jobs
-- KEYS[3] gm:{wg:G}:ready              LIST   due jobs
-- KEYS[4] gm:{wg:G}:completed          ZSET   completed ids
-- KEYS[5] gm:{wg:G}:logs:<id>          STREAM the job's logs
-- KEYS[6] gm:{wg:G}:done:<id>          LIST   wakes waiters
-- KEYS[7] gm:{wg:G}:events             STREAM lifecycle events
-- KEYS[8] gm:{wg:G}:attempts:<id>      LIST   attempt history
-- KEYS[9] gm:{wg:G}:control:<worker>   LIST   the running worker's control list ('' worker
--                                              when the caller saw the job queued)
-- KEYS[10] gm:{wg:G}:ix:status:queued  ZSET   listing index the job leaves
-- KEYS[11] gm:{wg:G}:ix:status:canceled ZSET  listing index the job joins
-- KEYS[12] gm:{wg:G}:ixtrim            ZSET   completed jobs' index entries, for the trim
-- KEYS[13..16] gm:{wg:G}:ix:by:<created_by>:live, ix:as:<permissioned_as>:live,
--              ix:by:<created_by>:canceled, ix:as:<permissioned_as>:canceled   ZSET
-- ARGV[1] job id
-- ARGV[2] now (epoch ms)
-- ARGV[3] canceled_by
-- ARGV[4] canceled_reason
-- ARGV[5] retention in seconds
-- ARGV[6] TTL of the done list in seconds
-- ARGV[7] events stream cap
-- ARGV[8] the worker the caller saw running the job ('' if none)
--
-- Returns {'canceled'} (it was queued: completed as canceled now),
-- {'requested'} (it is running: its worker is told through its control list
-- and completes it as canceled), {'completed', status} (too late),
-- {'missing'}, or {'moved'} (the job changed worker since the caller looked:
-- read it again and retry).

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

local cur = redis.call('HMGET', KEYS[1], 'status', 'worker')
local status = cur[1]
if not status then
  return {'missing'}
end
if status == 'success' or status == 'failure' or status == 'canceled' then
  return {'completed', status}
end
if status == 'running' then
  if cur[2] ~= ARGV[8] then
    return {'moved'}
  end
  redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'canceled_by', ARGV[3],
             'canceled_reason', ARGV[4])
  redis.call('RPUSH', KEYS[9], ARGV[1])
  redis.call('EXPIRE', KEYS[9], 3600)
  return {'requested'}
end
-- Queued: in scheduled, in ready, or taken by a worker that has not started it.
-- O(1) in the queue's length: the id stays in ready (an LREM there would scan
-- the whole list), and start.lua drops it when a worker takes it, seeing it is
-- no longer queued. KEYS[3] is kept for the callers' sake.
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'canceled', 'completed_at', ARGV[2],
           'canceled_by', ARGV[3], 'canceled_reason', ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
finish(KEYS[1], move_status(KEYS[1], KEYS[10], KEYS[11]), {KEYS[13], KEYS[14], KEYS[15], KEYS[16]},
       KEYS[12], ARGV[2], 'canceled')
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[5], ARGV[5])
redis.call('EXPIRE', KEYS[8], ARGV[5])
redis.call('LPUSH', KEYS[6], 'canceled')
redis.call('EXPIRE', KEYS[6], ARGV[6])
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[7], '*', 'event', 'completed', 'id', ARGV[1],
           'status', 'canceled')
return {'canceled'}
