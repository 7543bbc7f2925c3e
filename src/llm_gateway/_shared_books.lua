-- Shared rate-limit books (llm_gateway._shared_limits): one call applies the changes this
-- gateway owes the server, then takes one admission decision; atomically.
--
-- The same rules as the in-memory books (_ratelimit.py): per budget, one log of admissions
-- (a sorted set: id -> the time it was booked; a hash: id -> its tokens; their token total in
-- the budget's state hash), sliding windows over it, each with a cap for HIGH and one for the
-- other priorities; the provider's hints; the model's 429 pause; and, across processes, the
-- best class waiting at the head of some process's queue (a LOW request does not go while a
-- HIGH one waits elsewhere).
--
-- KEYS     the keys the changes name (their count is ARGV[6]), then, for a decision: the
--          model's waiting heads (hash: lane -> "rank expiry"), the model's state (hash: pause
--          -> until), and per budget its admissions (zset), tokens (hash) and state (hash: tok
--          = the tokens of the admissions in the zset; hr/hru, ht/htu = the provider's
--          remaining requests/tokens and until when)
-- ARGV     lane, first admission number, key ttl (ms), now ("" = the server's clock), poll (s),
--          number of change keys, the changes, the number of budgets (-1: changes only, no
--          decision), the budgets, the wanted admissions. The last four are records separated
--          by ";", each of fields separated by " " (few arguments: a client spends its time
--          per argument): a budget is its longest stay, then per window: kind (1 requests,
--          2 tokens), stay, cap for HIGH, cap for the others; a wanted admission is its
--          tokens, 1 if HIGH (else 0), its queue rank (0 = best).
-- Changes  each an opcode and its arguments (keys as indexes into KEYS):
--   S a t s id tokens        settle: the admission's real usage replaces its estimate, where it
--                            is still in the books
--   R a t s id               release: an admission that was never used leaves the books
--   H s kind remaining secs  hint (kind: r requests, t tokens): the provider says `remaining`
--                            until `secs` from now; kept if none is in force or it is lower
--   P s secs                 pause: the model sends nothing for `secs` (a 429's retry-after)
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
local nchangekeys = tonumber(ARGV[6])

local function records(text)
  local out = {}
  for record in string.gmatch(text, '[^;]+') do
    local fields = {}
    for field in string.gmatch(record, '[^ ]+') do fields[#fields + 1] = field end
    out[#out + 1] = fields
  end
  return out
end

-- 1. The changes.
for _, c in ipairs(records(ARGV[7])) do
  local op = c[1]
  if op == 'S' or op == 'R' then
    local a, t, s = KEYS[tonumber(c[2])], KEYS[tonumber(c[3])], KEYS[tonumber(c[4])]
    local id = c[5]
    if redis.call('ZSCORE', a, id) then
      local old = tonumber(redis.call('HGET', t, id) or '0') or 0
      if op == 'S' then
        local new = tonumber(c[6])
        redis.call('HSET', t, id, new)
        redis.call('HINCRBY', s, 'tok', new - old)
      else
        redis.call('ZREM', a, id)
        redis.call('HDEL', t, id)
        redis.call('HINCRBY', s, 'tok', -old)
      end
    end
  elseif op == 'H' then
    local s, kind = KEYS[tonumber(c[2])], c[3]
    local remaining, untl = tonumber(c[4]), now + tonumber(c[5])
    local h = redis.call('HMGET', s, 'h' .. kind, 'h' .. kind .. 'u')
    if not h[1] or tonumber(h[2]) <= now or remaining < tonumber(h[1]) then
      redis.call('HSET', s, 'h' .. kind, remaining, 'h' .. kind .. 'u', num(untl))
      redis.call('PEXPIRE', s, ttl)
    end
  elseif op == 'P' then
    local s = KEYS[tonumber(c[2])]
    local untl = now + tonumber(c[3])
    local pause = tonumber(redis.call('HGET', s, 'pause') or '0') or 0
    if untl > pause then
      redis.call('HSET', s, 'pause', num(untl))
      redis.call('PEXPIRE', s, ttl)
    end
  else
    return redis.error_reply('unknown change ' .. tostring(op))
  end
end

local nbudgets = tonumber(ARGV[8])
if nbudgets < 0 then return {0, '-1', num(now)} end
local specs, wanted = records(ARGV[9]), records(ARGV[10])

-- 2. The books, as they stand now.
local k = nchangekeys
local wait_key, pause_key = KEYS[k + 1], KEYS[k + 2]

local function chunked(command, key, ids, from, to)
  local out = {}
  for c = from, to, 500 do
    local got = redis.call(command, key, unpack(ids, c, math.min(c + 499, to)))
    if type(got) == 'table' then
      for j = 1, #got do out[#out + 1] = got[j] end
    end
  end
  return out
end

local budgets = {}
for b = 1, nbudgets do
  local B = {a = KEYS[k + 3 * b], t = KEYS[k + 3 * b + 1], s = KEYS[k + 3 * b + 2]}
  local spec = specs[b]
  B.maxstay = tonumber(spec[1])
  B.wins, B.tokens, B.finestay = {}, false, 0
  for w = 1, (#spec - 1) / 4 do
    local f = 4 * w - 2
    local W = {kind = tonumber(spec[f]), stay = tonumber(spec[f + 1]),
               caph = tonumber(spec[f + 2]), capo = tonumber(spec[f + 3])}
    W.whole = W.stay >= B.maxstay - 1e-9  -- spans the whole log: counted by totals
    if W.kind == 2 then B.tokens = true end
    if not W.whole and W.stay > B.finestay then B.finestay = W.stay end
    B.wins[w] = W
  end
  -- What left the longest window leaves the books (the same test as _Window.expire).
  local gone = redis.call('ZRANGEBYSCORE', B.a, '-inf', num(now - B.maxstay))
  B.toksum = tonumber(redis.call('HGET', B.s, 'tok') or '0') or 0
  if #gone > 0 then
    if B.tokens then
      local tok = chunked('HMGET', B.t, gone, 1, #gone)
      for j = 1, #tok do B.toksum = B.toksum - (tonumber(tok[j]) or 0) end
    end
    redis.call('ZREMRANGEBYSCORE', B.a, '-inf', num(now - B.maxstay))
    chunked('HDEL', B.t, gone, 1, #gone)
  end
  B.count = redis.call('ZCARD', B.a)
  if B.count == 0 then B.toksum = 0 end  -- the log expired as a whole: nothing is booked
  -- The recent admissions, for the shorter windows.
  B.at, B.tok = {}, {}
  if B.finestay > 0 then
    local log = redis.call('ZRANGEBYSCORE', B.a, '(' .. num(now - B.finestay), '+inf', 'WITHSCORES')
    local ids = {}
    for j = 1, #log, 2 do
      ids[#ids + 1] = log[j]
      B.at[#B.at + 1] = tonumber(log[j + 1])
      B.tok[#B.tok + 1] = 0
    end
    if B.tokens and #ids > 0 then
      local tok = chunked('HMGET', B.t, ids, 1, #ids)
      for j = 1, #tok do B.tok[j] = tonumber(tok[j]) or 0 end
    end
  end
  local h = redis.call('HMGET', B.s, 'hr', 'hru', 'ht', 'htu')
  B.hint = {}
  if h[1] and tonumber(h[2]) > now then B.hint[1] = {tonumber(h[1]), tonumber(h[2])} end
  if h[3] and tonumber(h[4]) > now then B.hint[2] = {tonumber(h[3]), tonumber(h[4])} end
  budgets[b] = B
end

local pause = tonumber(redis.call('HGET', pause_key, 'pause') or '0') or 0
-- The best class waiting at the head of another process's queue for this model.
local best, best_until = 99, now
local waiting = redis.call('HGETALL', wait_key)
for j = 1, #waiting, 2 do
  local rank, untl = string.match(waiting[j + 1], '^(%S+) (%S+)$')
  rank, untl = tonumber(rank), tonumber(untl)
  if untl <= now then
    redis.call('HDEL', wait_key, waiting[j])
  elseif waiting[j] ~= lane and rank < best then
    best, best_until = rank, untl
  end
end

-- 3. When each window fits one more request / `tokens` more (as _Window.when_*_fit).
local function recent_start(B, W)
  local lo = now - W.stay
  local j = 1
  while j <= #B.at and B.at[j] <= lo do j = j + 1 end
  return j
end

local function used(B, W)
  if W.whole then return W.kind == 1 and B.count or B.toksum end
  local start = recent_start(B, W)
  if W.kind == 1 then return #B.at - start + 1 end
  local sum = 0
  for j = start, #B.at do sum = sum + B.tok[j] end
  return sum
end

local function fits_at(B, W, tokens, cap)
  local need = W.kind == 1 and 1 or tokens
  local excess = used(B, W) + need - cap
  if excess <= 0 then return -1 end
  if W.kind == 1 and cap < 1 then return math.huge end
  if not W.whole then
    local start = recent_start(B, W)
    if W.kind == 1 then return B.at[start + excess - 1] + W.stay end
    local freed = 0
    for j = start, #B.at do
      freed = freed + B.tok[j]
      if freed >= excess then return B.at[j] + W.stay end
    end
    return math.huge
  end
  if W.kind == 1 then  -- the excess-th oldest admission leaves first
    local e = redis.call('ZRANGE', B.a, excess - 1, excess - 1, 'WITHSCORES')
    return tonumber(e[2]) + W.stay
  end
  local freed, from = 0, 0
  while true do
    local e = redis.call('ZRANGE', B.a, from, from + 99, 'WITHSCORES')
    if #e == 0 then return math.huge end
    local ids = {}
    for j = 1, #e, 2 do ids[#ids + 1] = e[j] end
    local tok = redis.call('HMGET', B.t, unpack(ids))
    for j = 1, #ids do
      freed = freed + (tonumber(tok[j]) or 0)
      if freed >= excess then return tonumber(e[2 * j]) + W.stay end
    end
    from = from + 100
  end
end

-- 4. Admit the longest head of the wanted ones that fits.
local admitted, ready, refused_rank = 0, nil, nil
for c = 1, #wanted do
  local tokens, high, rank = tonumber(wanted[c][1]), wanted[c][2] == '1', tonumber(wanted[c][3])
  local when = now
  if pause > when then when = pause end
  if best < rank then when = math.max(when, math.min(best_until, now + poll)) end
  for b = 1, nbudgets do
    local B = budgets[b]
    for w = 1, #B.wins do
      local W = B.wins[w]
      when = math.max(when, fits_at(B, W, tokens, high and W.caph or W.capo))
    end
    local need = {1, tokens}
    for kind = 1, 2 do
      local hint = B.hint[kind]
      if hint and hint[1] < need[kind] then when = math.max(when, hint[2]) end
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
    B.count = B.count + 1
    if B.tokens then
      redis.call('HSET', B.t, id, tokens)
      B.toksum = B.toksum + tokens
    end
    B.at[#B.at + 1] = now
    B.tok[#B.tok + 1] = tokens
    local need = {1, tokens}
    for kind = 1, 2 do
      local hint = B.hint[kind]
      if hint then
        hint[1] = math.max(0, hint[1] - need[kind])
        redis.call('HSET', B.s, kind == 1 and 'hr' or 'ht', hint[1])
      end
    end
  end
  admitted = admitted + 1
end

-- This process's head waits: the others' worse classes wait behind it (until it comes back).
if ready then
  redis.call('HSET', wait_key, lane, refused_rank .. ' ' .. num(now + math.min(ready - now, poll) + 1))
else
  redis.call('HDEL', wait_key, lane)
end

local out = {admitted, ready and num(ready - now) or '-1', num(now)}
for b = 1, nbudgets do
  local B = budgets[b]
  local left = {-1, -1}
  for w = 1, #B.wins do
    local W = B.wins[w]
    local free = math.max(0, W.caph - used(B, W))
    if left[W.kind] < 0 or free < left[W.kind] then left[W.kind] = free end
  end
  for kind = 1, 2 do
    if left[kind] >= 0 and B.hint[kind] and B.hint[kind][1] < left[kind] then
      left[kind] = B.hint[kind][1]
    end
    out[#out + 1] = left[kind]
  end
  if B.tokens then redis.call('HSET', B.s, 'tok', B.toksum) end
  redis.call('PEXPIRE', B.a, ttl)
  redis.call('PEXPIRE', B.t, ttl)
  redis.call('PEXPIRE', B.s, ttl)
end
redis.call('PEXPIRE', wait_key, ttl)
redis.call('PEXPIRE', pause_key, ttl)
return out
