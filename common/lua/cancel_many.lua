#!lua
-- cancel_many: complete a batch of queued jobs of one group as canceled, in one call.
--
-- KEYS[1] gm:{wg:G}:scheduled          ZSET   future jobs
-- KEYS[2] gm:{wg:G}:completed          ZSET   completed ids
-- KEYS[3] gm:{wg:G}:events             STREAM lifecycle events
-- KEYS[4] gm:{wg:G}:ix:status:queued   ZSET   listing index the jobs leave
-- KEYS[5] gm:{wg:G}:ix:status:canceled ZSET   listing index the jobs join
-- KEYS[6] gm:{wg:G}:ixtrim             ZSET   completed jobs' index entries, for the trim
-- KEYS[7 + 8k .. 14 + 8k] for the k-th id (k from 0):
--         gm:{wg:G}:job:<id>, gm:{wg:G}:logs:<id>, gm:{wg:G}:done:<id>,
--         gm:{wg:G}:attempts:<id>,
--         gm:{wg:G}:ix:by:<created_by>:live, ix:as:<permissioned_as>:live,
--         ix:by:<created_by>:canceled, ix:as:<permissioned_as>:canceled
--         (the caller read the job's identities first: they never change)
-- ARGV[1] now (epoch ms)
-- ARGV[2] canceled_by
-- ARGV[3] canceled_reason
-- ARGV[4] retention in seconds
-- ARGV[5] TTL of the done list in seconds
-- ARGV[6] events stream cap
-- ARGV[7..] job ids, in the order of their keys
--
-- Returns the kind of each job canceled now (one entry per job). Ids that are not queued any more
-- (running, completed, gone) are left alone: running jobs are canceled one by
-- one through their worker (cancel.lua). Like cancel.lua, it leaves canceled
-- ids in ready, where start.lua drops them: the cost is O(batch), never
-- O(queue length). Each job moves between the listing indexes as cancel.lua
-- moves it. Safe to repeat.

if #KEYS ~= 6 + 8 * (#ARGV - 6) then
  -- Checked before any write: a script that fails midway keeps what it wrote.
  return redis.error_reply('ERR cancel_many.lua: wrong number of keys or arguments')
end

-- Moves a canceled job's listing-index member (from the record's `ix` field) out of the
-- queued and live sets into the canceled ones, and records its entries for the trim.
local function unlist(job, id_keys)
  local ix = redis.call('HGET', job, 'ix')
  if not ix then
    return  -- the job predates the indexes
  end
  local m = string.match(ix, '^[^\t]*')
  redis.call('ZREM', KEYS[4], m)
  redis.call('ZADD', KEYS[5], 0, m)
  redis.call('ZREM', id_keys[1], m)
  redis.call('ZREM', id_keys[2], m)
  redis.call('ZADD', id_keys[3], 0, m)
  redis.call('ZADD', id_keys[4], 0, m)
  local who = redis.call('HMGET', job, 'created_by', 'permissioned_as')
  redis.call('ZADD', KEYS[6], ARGV[1], ix .. '\tstatus:canceled\tby:' .. (who[1] or '') ..
             ':canceled\tas:' .. (who[2] or '') .. ':canceled')
end

local canceled = {}
for k = 0, #ARGV - 7 do
  local id = ARGV[7 + k]
  local base = 7 + 8 * k
  local job, logs, done, attempts = KEYS[base], KEYS[base + 1], KEYS[base + 2], KEYS[base + 3]
  local cur = redis.call('HMGET', job, 'status', 'kind')
  if cur[1] == 'queued' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HSET', job, 'status', 'canceled', 'completed_at', ARGV[1],
               'canceled_by', ARGV[2], 'canceled_reason', ARGV[3])
    unlist(job, {KEYS[base + 4], KEYS[base + 5], KEYS[base + 6], KEYS[base + 7]})
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    redis.call('EXPIRE', job, ARGV[4])
    redis.call('EXPIRE', logs, ARGV[4])
    redis.call('EXPIRE', attempts, ARGV[4])
    redis.call('LPUSH', done, 'canceled')
    redis.call('EXPIRE', done, ARGV[5])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'event', 'completed', 'id', id,
               'status', 'canceled')
    canceled[#canceled + 1] = cur[2] or ''
  end
end
return canceled
