-- Append one event to a topic's stream and announce it, as one atomic step.
--
-- KEYS[1]  the topic's stream
-- ARGV[1]  data                      ARGV[2]  event type ('' for the default)
-- ARGV[3]  MAXLEN bound (0: none)    ARGV[4]  age bound in ms (0: none)
-- ARGV[5]  the topic's pub/sub channel (a channel, not a key: ACLs check it as one)
-- ARGV[6]  'PUBLISH', or 'SPUBLISH' in a Redis Cluster: sharded pub/sub announces the
--          event only on the primary that owns the topic's slot (its hash tag), where
--          the gateways subscribe with SSUBSCRIBE
--
-- Each entry records the ID of the entry before it ('p'). A gateway or a
-- replay that sees an entry whose 'p' is not the last ID it holds knows, for
-- certain, that events are missing between the two: trimmed history, a
-- subscription that was down, or a Redis that lost its data.
--
-- The message published is "<id>\n<prev>\n<type>\n<data>": IDs and types hold
-- no newline, so the data, last, may contain anything.
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if last[1] then prev = last[1][1] end

local id
local maxlen = tonumber(ARGV[3])
if maxlen > 0 then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'p', prev, 't', ARGV[2], 'd', ARGV[1])
else
  id = redis.call('XADD', KEYS[1], '*', 'p', prev, 't', ARGV[2], 'd', ARGV[1])
end

local max_age = tonumber(ARGV[4])
if max_age > 0 then
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age
  redis.call('XTRIM', KEYS[1], 'MINID', '~', oldest)
end

local announce = ARGV[6]
if announce ~= 'PUBLISH' and announce ~= 'SPUBLISH' then
  return redis.error_reply('ERR ARGV[6] must be PUBLISH or SPUBLISH')
end
redis.call(announce, ARGV[5], id .. '\n' .. prev .. '\n' .. ARGV[2] .. '\n' .. ARGV[1])
return id
