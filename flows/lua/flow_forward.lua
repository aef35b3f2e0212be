#!lua
-- flow_forward: hand step outcomes to flows of the step's own group, and remove them, in one step.
--
-- Used when the step and its flow are in the same group, so flownotify and the flow's keys share
-- the slot {wg:G} (a step in another group's slot goes by flow_event.lua, then pop_if_head.lua).
--
-- KEYS[1] gm:{wg:G}:flownotify       LIST  outcomes recorded by complete.lua
-- KEYS[2] gm:{wg:G}:flowq            LIST  flows with pending events
-- KEYS[1+2i] gm:{wg:G}:flow:<id>     HASH  the i-th outcome's flow (i = 1..n)
-- KEYS[2+2i] gm:{wg:G}:flowevents:<id> LIST its pending events
-- ARGV[3i-2] the i-th outcome, exactly its text in flownotify (the caller read the head)
-- ARGV[3i-1] its flow id
-- ARGV[3i]   its event (JSON)
--
-- While the head of flownotify is the next outcome given, pushes its event to its flow (if the
-- flow exists) and removes it: delivered and removed together, exactly once. Stops at the first
-- that differs (another forwarder handed it over first). Returns how many were handed over.

if #KEYS < 4 or #KEYS % 2 ~= 0 or #ARGV ~= 3 * (#KEYS - 2) / 2 then
  return redis.error_reply('ERR flow_forward.lua: wrong number of keys or arguments')
end
local moved = 0
for i = 1, (#KEYS - 2) / 2 do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[3 * i - 2] then
    break
  end
  if redis.call('EXISTS', KEYS[1 + 2 * i]) == 1 then
    redis.call('RPUSH', KEYS[2 + 2 * i], ARGV[3 * i])
    redis.call('RPUSH', KEYS[2], ARGV[3 * i - 1])
  end
  redis.call('LPOP', KEYS[1])
  moved = moved + 1
end
return moved
