-- One admission decision on shared rate-limit books (llm_gateway._shared_limits): atomic.
--
-- The same rules as the in-memory books (_ratelimit.py): per budget, one log of admissions
-- (a sorted set: id -> the time it was booked; a hash: id -> its tokens), sliding windows over
-- it, each with a cap for HIGH and one for the other priorities; the provider's hints; the
-- model's 429 pause; and, across processes, the best class waiting at the head of some
-- process's queue (a LOW request does not go while a HIGH one waits elsewhere).
--
-- KEYS[1]  the model's waiting heads (hash: lane -> "rank expiry")
-- KEYS[2]  the model's state (hash: pause -> until)
-- KEYS[3i], KEYS[3i+1], KEYS[3i+2]  budget i: admissions (zset), tokens (hash), state (hash:
--          hr/hru, ht/htu = the provider's remaining requests/tokens and until when)
-- ARGV     lane, first admission number, key ttl (ms), now ("" = the server's clock), poll (s),
--          number of budgets; per budget: the longest stay, number of windows, and per window:
--          kind (1 requests, 2 tokens), stay, cap for HIGH, cap for the others; then the number
--          of wanted admissions, and per wanted: tokens, is HIGH (1/0), queue rank (0 = best).
-- Returns  {admitted, seconds until the first refused one fits ("-1": none refused), now,
--          per budget: remaining requests, remaining tokens (-1: no limit)}.

local function num(x) return string.format('%.6f', x) end

local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local lane, first, ttl, poll = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local nbudgets = tonumber(ARGV[6])
local pos = 7

local function hdel_all(key, ids)
  for i = 1, #ids, 500 do
    redis.call('HDEL', key, unpack(ids, i, math.min(i + 499, #ids)))
  end
end

local budgets = {}
for b = 1, nbudgets do
  local B = {a = KEYS[3 * b], t = KEYS[3 * b + 1], s = KEYS[3 * b + 2]}
  B.maxstay = tonumber(ARGV[pos]); local nwin = tonumber(ARGV[pos + 1]); pos = pos + 2
  B.wins, B.tokens = {}, false
  for w = 1, nwin do
    local W = {kind = tonumber(ARGV[pos]), stay = tonumber(ARGV[pos + 1]),
               caph = tonumber(ARGV[pos + 2]), capo = tonumber(ARGV[pos + 3])}
    pos = pos + 4
    if W.kind == 2 then B.tokens = true end
    B.wins[w] = W
  end
  -- What left the longest window leaves the books (the same test as _Window.expire).
  local gone = redis.call('ZRANGEBYSCORE', B.a, '-inf', num(now - B.maxstay))
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', B.a, '-inf', num(now - B.maxstay))
    hdel_all(B.t, gone)
  end
  local log = redis.call('ZRANGEBYSCORE', B.a, '(' .. num(now - B.maxstay), '+inf', 'WITHSCORES')
  B.at, B.tok = {}, {}
  local ids = {}
  for i = 1, #log, 2 do
    ids[#ids + 1] = log[i]
    B.at[#B.at + 1] = tonumber(log[i + 1])
  end
  for i = 1, #ids do B.tok[i] = 0 end
  if B.tokens and #ids > 0 then
    for i = 1, #ids, 500 do
      local got = redis.call('HMGET', B.t, unpack(ids, i, math.min(i + 499, #ids)))
      for j = 1, #got do B.tok[i + j - 1] = tonumber(got[j]) or 0 end
    end
  end
  local h = redis.call('HMGET', B.s, 'hr', 'hru', 'ht', 'htu')
  B.hint = {}
  if h[1] and tonumber(h[2]) > now then B.hint[1] = {tonumber(h[1]), tonumber(h[2])} end
  if h[3] and tonumber(h[4]) > now then B.hint[2] = {tonumber(h[3]), tonumber(h[4])} end
  budgets[b] = B
end
local nwanted = tonumber(ARGV[pos]); pos = pos + 1

local pause = tonumber(redis.call('HGET', KEYS[2], 'pause') or '0') or 0
-- The best class waiting at the head of another process's queue for this model.
local best, best_until = 99, now
local waiting = redis.call('HGETALL', KEYS[1])
for i = 1, #waiting, 2 do
  local rank, untl = string.match(waiting[i + 1], '^(%S+) (%S+)$')
  rank, untl = tonumber(rank), tonumber(untl)
  if untl <= now then
    redis.call('HDEL', KEYS[1], waiting[i])
  elseif waiting[i] ~= lane and rank < best then
    best, best_until = rank, untl
  end
end

-- When a window fits one more request / `tokens` more (the same as _Window.when_*_fit).
local function window_start(B, W)
  local lo = now - W.stay
  local i = 1
  while i <= #B.at and B.at[i] <= lo do i = i + 1 end
  return i
end

local function fits_at(B, W, tokens, cap)
  local start = window_start(B, W)
  if W.kind == 1 then
    local excess = #B.at - start + 1 + 1 - cap
    if excess <= 0 then return -1 end
    if cap < 1 then return math.huge end
    return B.at[start + excess - 1] + W.stay
  end
  local used = 0
  for i = start, #B.at do used = used + B.tok[i] end
  local excess = used + tokens - cap
  if excess <= 0 then return -1 end
  local freed = 0
  for i = start, #B.at do
    freed = freed + B.tok[i]
    if freed >= excess then return B.at[i] + W.stay end
  end
  return math.huge
end

local admitted, ready, refused_rank = 0, nil, nil
for c = 1, nwanted do
  local tokens = tonumber(ARGV[pos]); local high = ARGV[pos + 1] == '1'
  local rank = tonumber(ARGV[pos + 2]); pos = pos + 3
  local when = now
  if pause > when then when = pause end
  if best < rank then when = math.max(when, math.min(best_until, now + poll)) end
  for b = 1, nbudgets do
    local B = budgets[b]
    for w = 1, #B.wins do
      local W = B.wins[w]
      local cap = high and W.caph or W.capo
      when = math.max(when, fits_at(B, W, tokens, cap))
    end
    local need = {1, tokens}
    for k = 1, 2 do
      local hint = B.hint[k]
      if hint and hint[1] < need[k] then when = math.max(when, hint[2]) end
    end
  end
  if when > now then
    ready, refused_rank = when, rank
    break
  end
  local id = lane .. ':' .. (first + admitted)
  for b = 1, nbudgets do
    local B = budgets[b]
    redis.call('ZADD', B.a, num(now), id)
    if B.tokens then redis.call('HSET', B.t, id, tokens) end
    B.at[#B.at + 1] = now
    B.tok[#B.tok + 1] = tokens
    local need = {1, tokens}
    for k = 1, 2 do
      local hint = B.hint[k]
      if hint then
        hint[1] = math.max(0, hint[1] - need[k])
        redis.call('HSET', B.s, k == 1 and 'hr' or 'ht', hint[1])
      end
    end
  end
  admitted = admitted + 1
end

-- This process's head waits: the others' worse classes wait behind it (until it comes back).
if ready then
  redis.call('HSET', KEYS[1], lane, refused_rank .. ' ' .. num(now + math.min(ready - now, poll) + 1))
else
  redis.call('HDEL', KEYS[1], lane)
end

local out = {admitted, ready and num(ready - now) or '-1', num(now)}
for b = 1, nbudgets do
  local B = budgets[b]
  local left = {-1, -1}
  for w = 1, #B.wins do
    local W = B.wins[w]
    local start = window_start(B, W)
    local used = 0
    if W.kind == 1 then
      used = #B.at - start + 1
    else
      for i = start, #B.at do used = used + B.tok[i] end
    end
    local free = math.max(0, W.caph - used)
    if left[W.kind] < 0 or free < left[W.kind] then left[W.kind] = free end
  end
  for k = 1, 2 do
    if left[k] >= 0 and B.hint[k] and B.hint[k][1] < left[k] then left[k] = B.hint[k][1] end
    out[#out + 1] = left[k]
  end
  redis.call('PEXPIRE', B.a, ttl)
  redis.call('PEXPIRE', B.t, ttl)
  redis.call('PEXPIRE', B.s, ttl)
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return out
