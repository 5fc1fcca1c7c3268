"""The Redis history's Lua scripts (bus/redis_history.py says how they are used)."""

# KEYS: stream, meta, dedupe. ARGV: data, fresh epoch, size, ttl ms, max bytes, dedupe ms,
# meta ttl ms. Returns the offset string. Each entry also carries "c", the channel's running byte
# total after it, so the bytes held are known from the first entry alone (no per-entry reads).
# Every redis.call costs ~1-2 us of script overhead: the common path makes seven.
APPEND = """
local seen = redis.call('GET', KEYS[3])
if seen then return seen end
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'seq', 'ms', 'total', 'exp')
local epoch, seq, last, total, exp = meta[1], 0, 0, 0, 0
if epoch then
  seq = tonumber(meta[2]); last = tonumber(meta[3])
  total = tonumber(meta[4]); exp = tonumber(meta[5])
else
  epoch = ARGV[2]
  redis.call('DEL', KEYS[1])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < last then now = last end
seq = seq + 1
total = total + #ARGV[1]
local id = string.format('%.0f-%.0f', now, seq)
redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[3], id, 'd', ARGV[1],
           'c', string.format('%.0f', total))
local ttl, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local oldest = now - ttl
local function excess(e)
  local ems = tonumber(string.match(e[1], '^(%d+)'))
  return e[1] ~= id and (ems < oldest or total - tonumber(e[2][4]) + #e[2][2] > cap)
end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if excess(head[1]) then
  local cut, start = nil, '-'
  while true do
    local batch = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 100)
    local stop = #batch == 0
    for _, e in ipairs(batch) do
      if not excess(e) then stop = true; break end
      cut = e[1]
    end
    if stop then break end
    start = '(' .. cut
  end
  local cms, cseq = string.match(cut, '^(%d+)-(%d+)$')
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%s-%.0f', cms, tonumber(cseq) + 1))
end
if now + ttl > exp then
  exp = now + 2 * ttl
  redis.call('PEXPIRE', KEYS[1], 2 * ttl)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[7]) + 2 * ttl)
end
redis.call('HSET', KEYS[2], 'epoch', epoch, 'seq', seq, 'ms', now, 'total', total, 'exp', exp)
local offset = epoch .. '.' .. id
redis.call('SET', KEYS[3], offset, 'PX', ARGV[6])
return offset
"""

# KEYS: stream, meta. ARGV: ttl ms, then pairs (epoch, start id). One read answers every queued
# ``since`` of the channel (bus/redis_history.py). Returns false (no history) or {epoch} when no
# pair names the current epoch, else {epoch, last seq, first seq, entries from the start id
# of that pair on}; each offset is then judged in Python (history.judge). Entries past the ttl are
# trimmed first, so a quiet channel answers as a busy one would (and as the memory history does).
SINCE = """
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'seq')
if not meta[1] then return false end
local start = nil
for i = 2, #ARGV, 2 do
  if ARGV[i] == meta[1] then start = ARGV[i + 1]; break end
end
if not start then return {meta[1]} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', now - tonumber(ARGV[1])))
local last = tonumber(meta[2])
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first = last + 1
if #head > 0 then first = tonumber(string.match(head[1][1], '-(%d+)$')) end
return {meta[1], last, first, redis.call('XRANGE', KEYS[1], start, '+')}
"""


# KEYS: stream, meta, recorders. ARGV: 'start' | 'gap', the recorder's name (its bus connection's
# presence channel, bus/presence.py), registration ttl ms, size, ttl ms, '1' where this server
# counts every subscriber ('' in a Cluster), how recent (ms) a registration's last refresh must
# be to be believed (a stalled recorder keeps its connections, not its beat). Returns the names
# of the recorders a 'start' believed instead of writing a marker (to fence, bus/fences.py;
# 0 in a Cluster, which has no presence names), 1 when a marker was written ('start': only when
# no live recorder, this one included, was registered: one still registered has recorded all
# along). A registration outlives a recorder killed
# without a stop by up to its ttl, and one whose subscription was cut until its gap marker; its
# presence channel does not, so a registration nobody holds the channel of is not believed, and
# the marker is written (docs/recovery.md "A crashed recorder"). Listeners of the event channel
# count for nothing. A marker is an entry with fields d='' c=<total> g=1: APPEND's trimming
# reads d and c at the same places, and since() refuses to cross it.
MARK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reg = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local mine = redis.call('ZSCORE', KEYS[3], ARGV[2])
local live = redis.call('ZCARD', KEYS[3])
redis.call('ZADD', KEYS[3], now + reg, ARGV[2])
redis.call('PEXPIRE', KEYS[3], reg)
if ARGV[1] == 'start' and live > 0 then
  if mine then return 0 end
  local fresh = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. (now + reg - ARGV[7]), '+inf')
  local believed = {}
  for _, id in ipairs(fresh) do
    if id ~= ARGV[2] and (ARGV[6] == '' or redis.call('PUBSUB', 'NUMSUB', id)[2] > 0) then
      if ARGV[6] == '' then return 0 end
      believed[#believed + 1] = id
    end
  end
  if #believed > 0 then return believed end
end
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'seq', 'ms', 'total')
if not meta[1] then return 0 end
local last = tonumber(meta[3])
if now < last then now = last end
local seq = tonumber(meta[2]) + 1
local id = string.format('%.0f-%.0f', now, seq)
redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[4], id, 'd', '', 'c', meta[4], 'g', '1')
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[5])) end
redis.call('HSET', KEYS[2], 'seq', seq, 'ms', now)
return 1
"""

# KEYS: recorders. ARGV: instance id, registration ttl ms ('' to leave).
BEAT_SCRIPT = """
if ARGV[2] == '' then return redis.call('ZREM', KEYS[1], ARGV[1]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
