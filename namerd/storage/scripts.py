"""The dtab store's writes, as Lua scripts: each write is one atomic script on Redis.

A script checks, writes the dtab hash, keeps the namespace set in step, bumps the version
counter and PUBLISHes, all at once. So a notification is never sent for a write that did not
happen, and a write never happens without its notification (see ``namerd.storage.store`` for
the key layout and the version rules these scripts implement).

Contract. KEYS: 1 = dtab hash, 2 = version counter, 3 = namespace set, 4 = history list.
ARGV: 1 = namespace, 2 = dtab channel, 3 = list channel, 4 = dtab text, 5 = expected version,
6 = the history entry, 7 = how many history entries to keep. Each script returns
``{status, version}``, status being one of the codes below. Versions are compared as decimal
strings, so an absurd If-Match (say, 2**63 - 1) simply mismatches and never gets rounded by
Lua's doubles.

History. A write that happens also LPUSHes its history entry and LTRIMs the list to ARGV[7]
entries, in the same script, so history can never disagree with the dtab. The entry (ARGV[6])
is a JSON object without the version, which only the script knows; the script splices it in
as the first field: ``{"op":..}`` becomes ``{"version":3,"op":..}``. A write that fails its
check (exists, not found, mismatch) records nothing.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CREATE_LUA",
    "DELETE_LUA",
    "EXISTS",
    "MISMATCH",
    "NOT_FOUND",
    "OK",
    "PUT_LUA",
    "UPDATE_LUA",
]

#: Status codes returned by the write scripts, as the first element of {status, version}.
OK: Final = 0
EXISTS: Final = 1
NOT_FOUND: Final = 2
MISMATCH: Final = 3

_COMMON_LUA = """
local function next_version()
  local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
  local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
  local v = math.max(current, issued) + 1
  redis.call('SET', KEYS[2], v)
  return v
end

local function remember(v)
  redis.call('LPUSH', KEYS[4], '{"version":' .. v .. ',' .. string.sub(ARGV[6], 2))
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
end
"""

CREATE_LUA = (
    _COMMON_LUA
    + """
local existing = redis.call('HGET', KEYS[1], 'version')
if existing then return {1, tonumber(existing)} end
local v = next_version()
redis.call('HSET', KEYS[1], 'dtab', ARGV[4], 'version', v)
remember(v)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], v)
redis.call('PUBLISH', ARGV[3], '+' .. ARGV[1])
return {0, v}
"""
)

UPDATE_LUA = (
    _COMMON_LUA
    + """
local existing = redis.call('HGET', KEYS[1], 'version')
if not existing then return {2, 0} end
if existing ~= ARGV[5] then return {3, tonumber(existing)} end
local v = next_version()
redis.call('HSET', KEYS[1], 'dtab', ARGV[4], 'version', v)
remember(v)
redis.call('PUBLISH', ARGV[2], v)
return {0, v}
"""
)

PUT_LUA = (
    _COMMON_LUA
    + """
local v = next_version()
redis.call('HSET', KEYS[1], 'dtab', ARGV[4], 'version', v)
remember(v)
redis.call('PUBLISH', ARGV[2], v)
-- SADD also repairs a set that lost the name; the list changes only if it was missing.
if redis.call('SADD', KEYS[3], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[3], '+' .. ARGV[1])
end
return {0, v}
"""
)

DELETE_LUA = (
    _COMMON_LUA
    + """
local existing = redis.call('HGET', KEYS[1], 'version')
if not existing then return {2, 0} end
-- Remember the deleted version, so a re-created namespace continues above it.
if tonumber(existing) > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], existing)
end
redis.call('DEL', KEYS[1])
remember(existing)
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], '-')
redis.call('PUBLISH', ARGV[3], '-' .. ARGV[1])
return {0, tonumber(existing)}
"""
)
