-- pop_if_head: remove the head of a list only if it is the element the caller handled.
--
-- KEYS[1] a LIST: a flow's outbox, or a group's flownotify
-- ARGV[1] the element the caller carried out (exact text)
--
-- Returns 1 when removed, 0 when the head is another element (someone else removed it
-- first): the caller's work was idempotent, so nothing is lost either way.

if #KEYS ~= 1 or #ARGV ~= 1 then
  return redis.error_reply('ERR pop_if_head.lua: wrong number of keys or arguments')
end
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then
  return 0
end
redis.call('LPOP', KEYS[1])
return 1
