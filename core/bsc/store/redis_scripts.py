"""The Lua scripts that change a shared cache in Redis.

Each script changes the entries and appends the matching event to the change stream in one atomic
step: Redis runs a script to its end even if the client that sent it dies, so an entry and its event
are written together or not at all.

Keys of one cache (all share the hash tag ``{name}``, so a Redis Cluster keeps them on one slot; the
per-namespace entry hashes are built from the prefix inside the scripts, on that same slot):

- ``bsc:{name}:meta``   hash: ``cfg`` (the settings every process must share), ``epoch`` (a random
  token, new whenever the cache is created again, e.g. after ``FLUSHALL``), ``seq`` (the number of the
  last event), ``next`` (entry counter), ``nsnext`` (namespace counter).
- ``bsc:{name}:ns`` / ``bsc:{name}:nsn``  hashes: namespace -> number and number -> namespace.
- ``bsc:{name}:e:<n>``  hash per namespace number: uid -> packed entry (`bsc.store.codec`).
  A uid is ``"<namespace number>:<counter>"``.
- ``bsc:{name}:lru``    sorted set: uid -> last use (wall-clock seconds), the global LRU order.
- ``bsc:{name}:exp``    sorted set: uid -> deadline, for entries with a TTL.
- ``bsc:{name}:log``    stream of events, trimmed to about ``stream_len`` events. Every event has
  ``s`` (seq), ``e`` (epoch), ``o`` (``p`` put, ``d`` delete, ``c`` clear a namespace, ``C`` clear all),
  ``n`` (namespace), ``x`` (comma-separated uids removed); a put also has ``u``, the new uids. A
  replica reads their packed entries from the hash: an entry never changes under its uid (a new put
  gets a new uid), so reading it after the event is safe, and one missing by then was removed by a
  later event. The stream thus stays small (about 100 bytes an event) whatever the entries weigh.
"""

from __future__ import annotations

__all__ = ["CLEAR", "DELETE", "INIT", "PUT", "STATE"]

# Shared by every script. KEYS: meta, ns, nsn, lru, exp, log. ARGV[1] is the key prefix.
_PRELUDE = """
local meta, nsmap, nsrev, lru, exp, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix = ARGV[1]

local function entry_key(uid)
  return prefix .. 'e:' .. string.match(uid, '^(%d+):')
end

-- Removes one entry everywhere; appends its uid to `removed` when it existed.
local function drop(uid, removed)
  if redis.call('HDEL', entry_key(uid), uid) == 1 then
    redis.call('ZREM', lru, uid)
    redis.call('ZREM', exp, uid)
    removed[#removed + 1] = uid
  end
end

-- Appends an event; returns its stream id and seq.
local function emit(maxlen, op, ns, removed, extra)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local epoch = redis.call('HGET', meta, 'epoch')
  local fields = {'s', seq, 'e', epoch, 'o', op, 'n', ns, 'x', table.concat(removed, ',')}
  for i = 1, #extra do fields[#fields + 1] = extra[i] end
  local id = redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  return id, seq
end

-- Creates the cache's meta hash when missing; returns the epoch, or an error naming the stored
-- settings when they differ from this process's.
local function ensure_meta(candidate, cfg)
  local stored = redis.call('HGET', meta, 'cfg')
  if not stored then
    redis.call('HSET', meta, 'cfg', cfg, 'epoch', candidate, 'seq', 0, 'next', 0, 'nsnext', 0)
    return candidate
  end
  if stored ~= cfg then
    return redis.error_reply('BSCCONFIG ' .. stored)
  end
  return redis.call('HGET', meta, 'epoch')
end
"""

#: ARGV: prefix, epoch candidate, cfg. Returns the epoch.
INIT = (
    _PRELUDE
    + """
return ensure_meta(ARGV[2], ARGV[3])
"""
)

#: ARGV: prefix, epoch candidate, cfg, now, stream_len, max_entries, namespace, then one
#: (deadline, packed entry) pair per new entry (at most max_entries of them).
#: Returns {epoch, seq, stream id, new uids (comma-separated)}.
PUT = (
    _PRELUDE
    + """
local epoch = ensure_meta(ARGV[2], ARGV[3])
if type(epoch) == 'table' then return epoch end
local now, maxlen, capacity, ns = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]), ARGV[7]
local n = (#ARGV - 7) / 2
local nsnum = redis.call('HGET', nsmap, ns)
if not nsnum then
  nsnum = tostring(redis.call('HINCRBY', meta, 'nsnext', 1))
  redis.call('HSET', nsmap, ns, nsnum)
  redis.call('HSET', nsrev, nsnum, ns)
end
local removed = {}
-- Expired entries go first (a bounded sweep per put), then the least recently used beyond capacity.
local old = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 128)
for i = 1, #old do drop(old[i], removed) end
local over = redis.call('ZCARD', lru) + n - capacity
if over > 0 then
  local popped = redis.call('ZPOPMIN', lru, over)
  for i = 1, #popped, 2 do drop(popped[i], removed) end
end
local last = redis.call('HINCRBY', meta, 'next', n)
local key = prefix .. 'e:' .. nsnum
local uids, scores = {}, {}
for i = 1, n do
  local uid = nsnum .. ':' .. (last - n + i)
  local deadline, blob = tonumber(ARGV[6 + 2 * i]), ARGV[7 + 2 * i]
  redis.call('HSET', key, uid, blob)
  scores[#scores + 1] = now
  scores[#scores + 1] = uid
  if deadline > 0 then redis.call('ZADD', exp, deadline, uid) end
  uids[i] = uid
end
redis.call('ZADD', lru, unpack(scores))
local id, seq = emit(maxlen, 'p', ns, removed, {'u', table.concat(uids, ',')})
return {epoch, seq, id, table.concat(uids, ',')}
"""
)

#: ARGV: prefix, stream_len, then uids. Returns {seq (0 when nothing was removed), stream id, removed}.
DELETE = (
    _PRELUDE
    + """
local removed = {}
for i = 3, #ARGV do drop(ARGV[i], removed) end
if #removed == 0 or redis.call('EXISTS', meta) == 0 then return {0, '', ''} end
local id, seq = emit(ARGV[2], 'd', '', removed, {})
return {seq, id, table.concat(removed, ',')}
"""
)

#: ARGV: prefix, stream_len, 'ns' or 'all', namespace. Returns {seq (0 when the cache does not exist
#: in Redis), stream id}.
CLEAR = (
    _PRELUDE
    + """
if redis.call('EXISTS', meta) == 0 then return {0, ''} end
local function forget(key)
  local uids = redis.call('HKEYS', key)
  for i = 1, #uids, 1000 do
    local chunk = {unpack(uids, i, math.min(i + 999, #uids))}
    redis.call('ZREM', lru, unpack(chunk))
    redis.call('ZREM', exp, unpack(chunk))
  end
  redis.call('UNLINK', key)
end
local id, seq
if ARGV[3] == 'all' then
  local nums = redis.call('HVALS', nsmap)
  for i = 1, #nums do redis.call('UNLINK', prefix .. 'e:' .. nums[i]) end
  redis.call('UNLINK', lru, exp)
  id, seq = emit(ARGV[2], 'C', '', {}, {})
else
  local nsnum = redis.call('HGET', nsmap, ARGV[4])
  if nsnum then forget(prefix .. 'e:' .. nsnum) end
  id, seq = emit(ARGV[2], 'c', ARGV[4], {}, {})
end
return {seq, id}
"""
)

#: A consistent starting point for a replica. Returns {epoch or false, seq, last stream id,
#: namespace numbers and names as a flat list, number of entries}.
STATE = (
    _PRELUDE
    + """
local epoch = redis.call('HGET', meta, 'epoch')
local seq = redis.call('HGET', meta, 'seq') or '0'
local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {epoch, seq, id, redis.call('HGETALL', nsrev), redis.call('ZCARD', lru)}
"""
)
