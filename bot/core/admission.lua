-- Admission (bot/core/admission.py): decide atomically whether a request is queued.
--
-- It runs last in the MULTI in which rq saved the job hash. rq's push of the job's id is held
-- (admission.HeldQueue): this script pushes it when it admits, so no worker can see a job it
-- refused. Refused: the hash is deleted before the transaction ends.
--
-- Inputs, in the order of admission.Call's fields (a test keeps the two in step).
local kept_key = KEYS[1]        -- results kept for the user
local dedupe_key = KEYS[2]      -- identical text from the user within the dedupe window
local rate_key = KEYS[3]        -- the user's recent admissions (sorted set)
local quota_key = KEYS[4]       -- the user's count for the UTC day
local slot_key = KEYS[5]        -- the user's one job in flight
local queue_key = KEYS[6]       -- rq's queue list: this script pushes the admitted job
local service_key = KEYS[7]     -- moving averages of service times
local blocked_key = KEYS[8]     -- the operators' block list (set)
local photo_key = KEYS[9]       -- the user's photo session
local pin_key = KEYS[10]        -- the seed `같은 시드로` kept for the next prompt
local seen_key = KEYS[11]       -- first contact
local metric_key = KEYS[12]     -- the request counter hash
local job_key = KEYS[13]        -- rq's job hash, saved earlier in this MULTI
local prompt_key = KEYS[14]     -- the user's last prompt (`다시 그리기`)
local claim_key = KEYS[15]      -- the hand-over claim (bot/core/handover.py)
local other_queue_key = KEYS[16] -- the other queue, served in turn by shared workers

local request_id = ARGV[1]
local slot_ttl = ARGV[2]
local now = tonumber(ARGV[3])
local rate_window = tonumber(ARGV[4])
local rate_limit = tonumber(ARGV[5])
local quota_limit = tonumber(ARGV[6])
local dedupe_ttl = ARGV[7]
local service_field = ARGV[8]
local default_service = ARGV[9]
local workers = math.max(1, tonumber(ARGV[10]))
local budget = tonumber(ARGV[11])
local check_limits = ARGV[12] == '1'   -- operators skip rate and quota
local at_front = ARGV[13] == '1'       -- push the job at the front (operators)
local member = ARGV[14]                -- `messenger:user`, as on the block list
local first_look = ARGV[15] == '1'     -- the caller has not read the user's state yet
local seen_ttl = ARGV[16]
local metric_field = ARGV[17]
local prompt_json = ARGV[18]           -- '' when the job is no drawing
local prompt_ttl = ARGV[19]
local claim_value = ARGV[20]           -- the slow-path claim, taken as claim_over says
local claim_ttl = ARGV[21]
local deferred_seed = ARGV[22] == '1'  -- the job's seed is ours to choose: a pinned seed wins
local take_pin = ARGV[23] == '1'       -- the job carries the pinned seed: delete the pin
local claim_over = tonumber(ARGV[24])  -- take the claim when the estimate passes this (s)
local pictures = math.max(1, tonumber(ARGV[25]))      -- a storybook counts its pictures
local min_pictures = math.max(1, tonumber(ARGV[26]))  -- and may shrink to this many
local other_field = ARGV[27]           -- the other queue's service-time field
local shared = tonumber(ARGV[28])      -- workers serving this queue and the other one

-- Statuses, as admission.Status numbers them (a test keeps the two in step).
local KEPT, DUPLICATE, RATE, QUOTA, BUSY, TOO_SLOW, ADMITTED, BLOCKED, PHOTO, PINNED, SHORTER =
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10

local pin, fresh = '', 0
local function refuse(status, value)
  redis.call('DEL', job_key)
  return {status, value, pin, fresh}
end

-- First look (the webhook's fast path): a user with a photo session is decided again, the long
-- way; otherwise this call counts the request, marks first contact and reads the pinned seed.
if first_look then
  if redis.call('EXISTS', photo_key) == 1 then return refuse(PHOTO, '') end
  redis.call('HINCRBY', metric_key, metric_field, 1)
  if redis.call('SET', seen_key, '1', 'NX', 'EX', seen_ttl) then fresh = 1 end
  pin = redis.call('GET', pin_key) or ''
  if pin ~= '' and deferred_seed then return refuse(PINNED, '') end
end
if redis.call('SISMEMBER', blocked_key, member) == 1 then return refuse(BLOCKED, '') end
local kept = redis.call('LLEN', kept_key)
if kept > 0 then return refuse(KEPT, kept) end
local dup = redis.call('GET', dedupe_key)
if dup then return refuse(DUPLICATE, dup) end
if check_limits and rate_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', rate_key, '-inf', now - rate_window)
  if redis.call('ZCARD', rate_key) >= rate_limit then
    local oldest = redis.call('ZRANGE', rate_key, 0, 0, 'WITHSCORES')
    return refuse(RATE, tostring(math.ceil(tonumber(oldest[2]) + rate_window - now)))
  end
end
if check_limits and quota_limit > 0 then
  local used = tonumber(redis.call('GET', quota_key) or '0')
  if used + pictures > quota_limit then return refuse(QUOTA, tostring(used)) end
end
if not redis.call('SET', slot_key, request_id, 'NX', 'EX', slot_ttl) then
  return refuse(BUSY, redis.call('GET', slot_key))
end
-- The estimate: the job's place in its queue, divided among the live workers, times the
-- moving average of recent service times. A storybook is one batched job: its own time is the
-- moving average of books of its size, or, never measured, its pictures drawn one by one.
local service = tonumber(redis.call('HGET', service_key, service_field) or default_service)
local function own_time(n)
  if n <= 1 then return service end
  return tonumber(redis.call('HGET', service_key, service_field .. ':b' .. n) or service * n)
end
local ahead = 0
if not at_front then ahead = redis.call('LLEN', queue_key) end
local rounds = math.floor(math.max(0, ahead) / workers)  -- rounds of jobs in front of it
local before = rounds * service
-- A worker serving both queues takes them in turn (round robin): before this job, each shared
-- worker takes at most one job of the other queue per job of this one.
if shared > 0 then
  local other = math.min(redis.call('LLEN', other_queue_key), (rounds + 1) * shared)
  local other_service = tonumber(redis.call('HGET', service_key, other_field) or default_service)
  before = before + other / workers * other_service
end
local estimate = before + own_time(pictures)
if estimate > budget then
  redis.call('DEL', slot_key)
  -- A book that would fit with scenes dropped from its end is written again, shorter.
  for n = pictures - 1, min_pictures, -1 do
    if before + own_time(n) <= budget then
      return refuse(SHORTER, tostring(n))
    end
  end
  return refuse(TOO_SLOW, tostring(estimate))
end
if check_limits and rate_limit > 0 then
  redis.call('ZADD', rate_key, now, request_id)
  redis.call('EXPIRE', rate_key, math.ceil(rate_window) + 1)
end
if check_limits and quota_limit > 0 then
  redis.call('INCRBY', quota_key, pictures)
  redis.call('EXPIRE', quota_key, 172800)
end
if at_front then
  redis.call('LPUSH', queue_key, request_id)
else
  redis.call('RPUSH', queue_key, request_id)
end
redis.call('SET', dedupe_key, request_id, 'EX', dedupe_ttl)
if pin ~= '' or take_pin then redis.call('DEL', pin_key) end
if prompt_json ~= '' then redis.call('SET', prompt_key, prompt_json, 'EX', prompt_ttl) end
-- The slow-path claim of the hand-over, taken now when the webhook will not wait, or when the
-- estimate says the job cannot be done before its wait ends: the job is pushed in this
-- transaction, so no worker can have claimed it first.
local claimed = 0
if claim_value ~= '' and estimate > claim_over then
  redis.call('SET', claim_key, claim_value, 'NX', 'EX', claim_ttl)
  claimed = 1
end
return {ADMITTED, tostring(ahead) .. ':' .. tostring(estimate) .. ':' .. claimed, pin, fresh}
