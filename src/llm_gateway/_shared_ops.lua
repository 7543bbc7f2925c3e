-- Changes to shared rate-limit books that decide nothing (llm_gateway._shared_limits): atomic.
--
-- KEYS     every key the changes touch
-- ARGV     now ("" = the server's clock), key ttl (ms), then changes, each an opcode and its
--          arguments (key arguments are indexes into KEYS):
--   S a t id tokens          settle: the admission's real usage replaces its estimate, where it
--                            is still in the books (a: admissions zset, t: tokens hash)
--   R a t id                 release: an admission that was never used leaves the books
--   H s kind remaining secs  hint (kind: r requests, t tokens): the provider says `remaining`
--                            until `secs` from now; kept if none is in force or it is lower
--   P s secs                 pause: the model sends nothing for `secs` (a 429's retry-after)

local function num(x) return string.format('%.6f', x) end

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local ttl = tonumber(ARGV[2])
local i = 3
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'S' then
    local a, t = KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 2])]
    if redis.call('ZSCORE', a, ARGV[i + 3]) then
      redis.call('HSET', t, ARGV[i + 3], ARGV[i + 4])
    end
    i = i + 5
  elseif op == 'R' then
    local a, t = KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 2])]
    redis.call('ZREM', a, ARGV[i + 3])
    redis.call('HDEL', t, ARGV[i + 3])
    i = i + 4
  elseif op == 'H' then
    local s, kind = KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
    local remaining, untl = tonumber(ARGV[i + 3]), now + tonumber(ARGV[i + 4])
    local h = redis.call('HMGET', s, 'h' .. kind, 'h' .. kind .. 'u')
    if not h[1] or tonumber(h[2]) <= now or remaining < tonumber(h[1]) then
      redis.call('HSET', s, 'h' .. kind, remaining, 'h' .. kind .. 'u', num(untl))
      redis.call('PEXPIRE', s, ttl)
    end
    i = i + 5
  elseif op == 'P' then
    local s = KEYS[tonumber(ARGV[i + 1])]
    local untl = now + tonumber(ARGV[i + 2])
    local pause = tonumber(redis.call('HGET', s, 'pause') or '0') or 0
    if untl > pause then
      redis.call('HSET', s, 'pause', num(untl))
      redis.call('PEXPIRE', s, ttl)
    end
    i = i + 3
  else
    return redis.error_reply('unknown change ' .. tostring(op))
  end
end
return 1
