-- cancel_many: complete a batch of queued jobs of one group as canceled, in one call.
--
-- KEYS[1] gm:{wg:G}:scheduled          ZSET   future jobs
-- KEYS[2] gm:{wg:G}:completed          ZSET   completed ids
-- KEYS[3] gm:{wg:G}:events             STREAM lifecycle events
-- KEYS[4 + 4k .. 7 + 4k] for the k-th id (k from 0):
--         gm:{wg:G}:job:<id>, gm:{wg:G}:logs:<id>, gm:{wg:G}:done:<id>,
--         gm:{wg:G}:attempts:<id>
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
-- O(queue length). Safe to repeat.

local canceled = {}
for k = 0, #ARGV - 7 do
  local id = ARGV[7 + k]
  local job, logs, done, attempts = KEYS[4 + 4 * k], KEYS[5 + 4 * k], KEYS[6 + 4 * k],
                                    KEYS[7 + 4 * k]
  local cur = redis.call('HMGET', job, 'status', 'kind')
  if cur[1] == 'queued' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HSET', job, 'status', 'canceled', 'completed_at', ARGV[1],
               'canceled_by', ARGV[2], 'canceled_reason', ARGV[3])
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
