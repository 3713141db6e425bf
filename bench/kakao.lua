-- wrk script: Kakao skill requests, each from a distinct user (no per-user slot collisions).
-- wrk's random numbers repeat from run to run, so each run passes its own tag after `--`:
-- without it a second run would send the first run's users, who still hold their slots.
local counter = 0
local thread_id = 0
local run_tag = "run"
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid
  if args[1] then run_tag = args[1] end
end

function request()
  counter = counter + 1
  local user = string.format("bench-%s-%d-%d", run_tag, thread_id, counter)
  local body = '{"intent":{"id":"i","name":"fallback"},"userRequest":{"timezone":"Asia/Seoul",' ..
    '"utterance":"a koala surfing a wave ' .. counter .. ', watercolor","lang":"ko","user":{"id":"' .. user ..
    '","type":"botUserKey","properties":{}},"params":{"surface":"Kakaotalk.plusfriend"},' ..
    '"callbackUrl":"https://bot-api.kakao.com/v1/bots/b/callback/' .. user .. '"},' ..
    '"bot":{"id":"b","name":"bench"},"action":{"name":"s","params":{},"detailParams":{},"id":"a"}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
