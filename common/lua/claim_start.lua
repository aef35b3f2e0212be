#!lua
-- claim_start: start the ids a worker's BLMOVE landed, then take up to K due ids off ready
-- into its running list and start each, in one call. The worker blocks in BLMOVE (ready ->
-- its landing list) only when ready is empty, and then sends this call in the same write,
-- behind the BLMOVE (ARGV[7]).
--
-- KEYS[1] gm:{wg:G}:ready               LIST   due job ids, oldest first
-- KEYS[2] gm:{wg:G}:running:<worker>    LIST   ids the worker holds
-- KEYS[3] gm:{wg:G}:events              STREAM lifecycle events
-- KEYS[4] gm:{wg:G}:ix:status:queued    ZSET   listing index the jobs leave
-- KEYS[5] gm:{wg:G}:ix:status:running   ZSET   listing index the jobs join
-- KEYS[6] gm:{wg:G}:landing:<worker>    LIST   ids the worker's BLMOVE took off ready,
--                                              not started yet
-- KEYS[7] gm:{wg:G}:gone:<worker>       STRING set while the worker is presumed dead
-- ARGV[1] prefix of the group's job records, "gm:{wg:G}:job:" (see below)
-- ARGV[2] worker id
-- ARGV[3] now (epoch ms); empty with ARGV[7]
-- ARGV[4] claim prefix: fresh and random (hex); job n of this call gets claim <prefix><n as 4 hex digits>
-- ARGV[5] events stream cap
-- ARGV[6] K: how many jobs to start at most (landed ids count, ids of canceled jobs do not;
--         at most 4K + 16 ids are taken off ready in one call)
-- ARGV[7] optional: '1' when this call rides behind the worker's BLMOVE in one write. Redis
--         runs it once the BLMOVE returned (other clients' commands may come between), so
--         its sender knew neither the id nor the time: now is the server's TIME, and when
--         nothing had landed (the block timed out, or the worker interrupted it to stop)
--         nothing at all is started.
--
-- Landed ids are the oldest, so they go first; one a failed call left there (an
-- out-of-memory refusal, a lost connection) is started by the worker's next claim of any
-- kind. They move into the running list only as this script starts them: the running
-- list holds no id of the worker's that a claim is about to start, so the heartbeat's
-- reconciliation never races one (a dead or stopping worker's landing list goes back to
-- ready first, Store.unland).
--
-- A worker presumed dead (KEYS[7], set by the scheduler that recovers it, until the worker
-- registers again) starts nothing, and what landed goes back to the head of ready: a blocking claim it left parked in Redis (its host gone) may still take
-- an id after the recovery, and no one would look at its lists again. The answer is then
-- {'gone'}: a live worker registers again (and waits for it, not spinning on claims).
--
-- The records' keys cannot be passed in KEYS: the ids are only known once taken off ready.
-- They are built from ARGV[1], which carries the same hash tag {wg:G} as every key above,
-- so the script touches one slot only and runs unchanged on a Redis Cluster.
--
-- Returns a flat array: id, claim, HGETALL record (an array) for each job now running under
-- this worker. An id whose job is gone or no longer queued (canceled while it waited) is
-- dropped from the running list and not returned.

local function move_status(job_key, from_key, to_key)
  local ix = redis.call('HGET', job_key, 'ix')
  if ix then
    local m = string.match(ix, '^[^\t]*')
    redis.call('ZREM', from_key, m)
    redis.call('ZADD', to_key, 0, m)
  end
end

local out = {}
if redis.call('EXISTS', KEYS[7]) == 1 then
  while redis.call('LMOVE', KEYS[6], KEYS[1], 'RIGHT', 'LEFT') do
  end
  return {'gone'}
end
local n = 0
local now = ARGV[3]
if ARGV[7] == '1' then
  if redis.call('LLEN', KEYS[6]) == 0 then
    return out
  end
  local time = redis.call('TIME')
  now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
end

local function start(id)
  local job_key = ARGV[1] .. id
  if redis.call('HGET', job_key, 'status') ~= 'queued' then
    redis.call('LREM', KEYS[2], 0, id)
    return
  end
  n = n + 1
  local claim = ARGV[4] .. string.format('%04x', n)
  redis.call('HSET', job_key, 'status', 'running', 'started_at', now, 'worker', ARGV[2],
             'claim', claim)
  redis.call('HINCRBY', job_key, 'attempt', 1)
  move_status(job_key, KEYS[4], KEYS[5])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'event', 'started', 'id', id,
             'worker', ARGV[2])
  out[#out + 1] = id
  out[#out + 1] = claim
  out[#out + 1] = redis.call('HGETALL', job_key)
end

local function take(from)
  local id = redis.call('LMOVE', from, KEYS[2], 'LEFT', 'RIGHT')
  if id then
    start(id)
  end
  return id
end

local want = tonumber(ARGV[6])
for _ = 1, 4 * want + 16 do
  if n >= want or not take(KEYS[6]) then
    break
  end
end
for _ = 1, 4 * want + 16 do
  if n >= want or not take(KEYS[1]) then
    break
  end
end
return out
