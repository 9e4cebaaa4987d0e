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
- ``bsc:{name}:lru``    sorted set: uid -> last use (wall-clock seconds), the global LRU order (and the
  set of live entries, whatever the policy).
- ``bsc:{name}:exp``    sorted set: uid -> deadline, for entries with a TTL.
- ``bsc:{name}:ord``    sorted set, policies other than ``lru``: uid -> position in the policy's queue
  (insertion order; ``lfu`` moves an entry it spares to the head with a new position).
- ``bsc:{name}:st``     hash, policies other than ``lru``: uid -> use counter (``lfu``) or ``1`` for a
  visited entry (``sieve``, ``diverse``); a missing field is 0. ``meta``'s ``hand`` is the position the
  SIEVE hand looks at next.
- ``bsc:{name}:log``    stream of events, trimmed to about ``stream_len`` events. Every event has
  ``s`` (seq), ``e`` (epoch), ``o`` (``p`` put, ``d`` delete, ``c`` clear a namespace, ``C`` clear all),
  ``n`` (namespace), ``x`` (comma-separated uids removed); a put also has ``u``, the new uids. A
  replica reads their packed entries from the hash: an entry never changes under its uid (a new put
  gets a new uid), so reading it after the event is safe, and one missing by then was removed by a
  later event. The stream thus stays small (about 100 bytes an event) whatever the entries weigh.
"""

from __future__ import annotations

__all__ = ["CLEAR", "DELETE", "INIT", "PUT", "STATE", "TOUCH"]

#: `diverse`: the newest share of the entries, in percent, that the hand never reaches (as
#: ``PROTECTED_PERCENT`` in ``rust/src/eviction.rs``).
PROTECTED_PERCENT = 40

# Shared by every script. KEYS: meta, ns, nsn, lru, exp, log, ord, st. ARGV[1] is the key prefix.
_PRELUDE = """
local meta, nsmap, nsrev, lru, exp, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local ord, st = KEYS[7], KEYS[8]
local prefix = ARGV[1]

local function entry_key(uid)
  return prefix .. 'e:' .. string.match(uid, '^(%d+):')
end

-- Removes one entry everywhere; appends its uid to `removed` when it existed.
local function drop(uid, removed)
  if redis.call('HDEL', entry_key(uid), uid) == 1 then
    redis.call('ZREM', lru, uid)
    redis.call('ZREM', exp, uid)
    redis.call('ZREM', ord, uid)
    redis.call('HDEL', st, uid)
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

# The eviction policies other than lru, as in rust/src/eviction.rs, over `ord` and `st`.
_POLICIES = """
-- LFU with ageing (a counted CLOCK): the oldest goes if unused; otherwise its counter is halved and it
-- moves to the head. At most 32 looked at; then the least used of them goes.
local function lfu_victim()
  local best, best_count
  for _ = 1, 32 do
    local oldest = redis.call('ZRANGE', ord, 0, 0)
    if #oldest == 0 then break end
    local uid = oldest[1]
    local count = tonumber(redis.call('HGET', st, uid) or '0')
    if count == 0 then return uid end
    if best == nil or count < best_count then best, best_count = uid, count end
    if count > 1 then redis.call('HSET', st, uid, math.floor(count / 2)) else redis.call('HDEL', st, uid) end
    redis.call('ZADD', ord, redis.call('HINCRBY', meta, 'next', 1), uid)
  end
  return best
end

-- SIEVE: the hand walks towards the newest, clearing visited bits, and evicts the first unvisited entry.
-- It goes back to the oldest when no more than `protected` percent of the entries are ahead of it (0 for
-- sieve, which wraps at the newest; diverse never reaches its newest window). A script blocks Redis, so
-- one eviction looks at 1024 entries at most (a local index has no such bound): then the last one goes.
local function sieve_victim(protected)
  local live = redis.call('ZCARD', ord)
  local window = math.floor(live * protected / 100)
  local hand = tonumber(redis.call('HGET', meta, 'hand') or '0')
  local uid
  for _ = 1, math.min(2 * live + 2, 1024) do
    if redis.call('ZCOUNT', ord, hand, '+inf') <= window then hand = 0 end
    local found = redis.call('ZRANGEBYSCORE', ord, hand, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #found == 0 then return nil end
    uid = found[1]
    hand = tonumber(found[2]) + 1
    if redis.call('HDEL', st, uid) == 0 then break end  -- unvisited (a visited one has its bit cleared)
  end
  redis.call('HSET', meta, 'hand', hand)
  return uid
end
"""

#: ARGV: prefix, epoch candidate, cfg, now, stream_len, max_entries, namespace, eviction policy, then
#: one (deadline, admitted, packed entry) triple per new entry (at most max_entries of them); admitted
#: "1" starts the entry visited (``diverse``: it has a neighbour in the writer's replica).
#: Returns {epoch, seq, stream id, new uids (comma-separated)}.
PUT = (
    _PRELUDE
    + _POLICIES
    + """
local epoch = ensure_meta(ARGV[2], ARGV[3])
if type(epoch) == 'table' then return epoch end
local now, maxlen, capacity, ns = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]), ARGV[7]
local policy = ARGV[8]
local n = (#ARGV - 8) / 3
local nsnum = redis.call('HGET', nsmap, ns)
if not nsnum then
  nsnum = tostring(redis.call('HINCRBY', meta, 'nsnext', 1))
  redis.call('HSET', nsmap, ns, nsnum)
  redis.call('HSET', nsrev, nsnum, ns)
end
local removed = {}
-- Expired entries go first (a bounded sweep per put), then what the policy chooses beyond capacity.
local old = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 128)
for i = 1, #old do drop(old[i], removed) end
local over = redis.call('ZCARD', lru) + n - capacity
if over > 0 and policy == 'lru' then
  local popped = redis.call('ZPOPMIN', lru, over)
  for i = 1, #popped, 2 do drop(popped[i], removed) end
elseif over > 0 then
  for _ = 1, over do
    local victim
    if policy == 'lfu' then
      victim = lfu_victim()
    else
      victim = sieve_victim(policy == 'diverse' and DIVERSE_PROTECTED or 0)
    end
    if not victim then break end
    drop(victim, removed)
  end
end
local last = redis.call('HINCRBY', meta, 'next', n)
local key = prefix .. 'e:' .. nsnum
local uids, scores = {}, {}
for i = 1, n do
  local uid = nsnum .. ':' .. (last - n + i)
  local deadline, admitted, blob = tonumber(ARGV[6 + 3 * i]), ARGV[7 + 3 * i], ARGV[8 + 3 * i]
  redis.call('HSET', key, uid, blob)
  if policy ~= 'lru' then
    redis.call('ZADD', ord, last - n + i, uid)
    if admitted == '1' then redis.call('HSET', st, uid, 1) end
  end
  scores[#scores + 1] = now
  scores[#scores + 1] = uid
  if deadline > 0 then redis.call('ZADD', exp, deadline, uid) end
  uids[i] = uid
end
redis.call('ZADD', lru, unpack(scores))
local id, seq = emit(maxlen, 'p', ns, removed, {'u', table.concat(uids, ',')})
return {epoch, seq, id, table.concat(uids, ',')}
"""
).replace("DIVERSE_PROTECTED", str(PROTECTED_PERCENT))

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
    redis.call('ZREM', ord, unpack(chunk))
    redis.call('HDEL', st, unpack(chunk))
  end
  redis.call('UNLINK', key)
end
local id, seq
if ARGV[3] == 'all' then
  local nums = redis.call('HVALS', nsmap)
  for i = 1, #nums do redis.call('UNLINK', prefix .. 'e:' .. nums[i]) end
  redis.call('UNLINK', lru, exp, ord, st)
  id, seq = emit(ARGV[2], 'C', '', {}, {})
else
  local nsnum = redis.call('HGET', nsmap, ARGV[4])
  if nsnum then forget(prefix .. 'e:' .. nsnum) end
  id, seq = emit(ARGV[2], 'c', ARGV[4], {}, {})
end
return {seq, id}
"""
)

#: ARGV: prefix, eviction policy (not lru), then uids used since the last call. Marks the live ones
#: visited (sieve, diverse) or adds one to their counter (lfu, saturating at 255).
TOUCH = (
    _PRELUDE
    + """
for i = 3, #ARGV do
  local uid = ARGV[i]
  if redis.call('ZSCORE', ord, uid) then
    if ARGV[2] == 'lfu' then
      if tonumber(redis.call('HGET', st, uid) or '0') < 255 then redis.call('HINCRBY', st, uid, 1) end
    else
      redis.call('HSET', st, uid, 1)
    end
  end
end
return 0
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
