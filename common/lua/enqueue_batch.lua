#!lua
-- enqueue_batch: create and queue many jobs of one group that join the same listing
-- indexes (one admission chunk of one template), as enqueue.lua does one by one.
--
-- KEYS[1] gm:{wg:G}:scheduled     ZSET   future jobs, score = scheduled_for
-- KEYS[2] gm:{wg:G}:ready         LIST   due jobs
-- KEYS[3] gm:{wg:G}:wake          LIST   nudge for the group's promoter
-- KEYS[4] gm:{wg:G}:events        STREAM lifecycle events
-- KEYS[5 .. 4+n] gm:{wg:G}:ix:<entry>  ZSET  the listing indexes every job joins
-- KEYS[5+n ..]   gm:{wg:G}:job:<id>    HASH  each job's record (must not exist yet), in
--                                           the order of the jobs in ARGV[4]
-- ARGV[1] now (epoch ms)
-- ARGV[2] events stream cap
-- ARGV[3] n, the number of index keys
-- ARGV[4] msgpack array, one entry per job: {id, scheduled_for, priority, index member,
--         {field, value, field, value, ...}}
--
-- Returns an array with one state per job, as enqueue.lua answers it: 0 when a job of
-- that id exists (nothing written for it: never run twice), 1 queued for later, 2 ready
-- now. Each index gets one ZADD for the whole batch; due jobs of priority 0 one RPUSH,
-- in their order (a priority job goes to the head at its turn, as one by one); the
-- promoter is nudged once when the earliest future job is due before the current head.

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[3])
local jobs = cmsgpack.unpack(ARGV[4])
local states = {}
local members = {}
local tail = {}
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local head_at = head[2] and tonumber(head[2]) or nil
local earliest = nil

local function flush_tail()
  if #tail > 0 then
    redis.call('RPUSH', KEYS[2], unpack(tail))
    tail = {}
  end
end

for i, job in ipairs(jobs) do
  local id, at, priority, member, record = job[1], tonumber(job[2]), tonumber(job[3]), job[4], job[5]
  local key = KEYS[4 + n + i]
  if redis.call('EXISTS', key) == 1 then
    states[i] = 0
  else
    redis.call('HSET', key, unpack(record))
    members[#members + 1] = 0
    members[#members + 1] = member
    if at <= now then
      if priority > 0 then
        flush_tail()
        redis.call('LPUSH', KEYS[2], id)
      else
        tail[#tail + 1] = id
      end
      states[i] = 2
    else
      redis.call('ZADD', KEYS[1], at, id)
      if earliest == nil or at < earliest then
        earliest = at
      end
      states[i] = 1
    end
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'event', 'queued', 'id', id)
  end
end
flush_tail()
if #members > 0 then
  for k = 5, 4 + n do
    redis.call('ZADD', KEYS[k], unpack(members))
  end
end
if earliest ~= nil and (head_at == nil or earliest < head_at) then
  -- One pending nudge is enough: keep the list at a single element.
  redis.call('DEL', KEYS[3])
  redis.call('LPUSH', KEYS[3], tostring(earliest))
end
return states
