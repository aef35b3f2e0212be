#!lua
-- pop_if_head: remove the first elements of a list only if they are the ones the caller handled.
--
-- KEYS[1] a LIST: a flow's outbox, or a group's flownotify
-- ARGV[1..n] the elements the caller carried out, in list order (exact texts)
--
-- Removes the head while it equals the next of ARGV, stopping at the first that differs
-- (someone else removed it first: the caller's work was idempotent, so nothing is lost).
-- Returns how many were removed.

if #KEYS ~= 1 or #ARGV < 1 then
  return redis.error_reply('ERR pop_if_head.lua: wrong number of keys or arguments')
end
local removed = 0
for i = 1, #ARGV do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[i] then
    break
  end
  redis.call('LPOP', KEYS[1])
  removed = removed + 1
end
return removed
