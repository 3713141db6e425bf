-- wrk script: Kakao skill requests, each from a distinct user (no per-user slot collisions).
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid
end

function request()
  counter = counter + 1
  local user = string.format("bench-%d-%d-%d", thread_id, counter, math.random(1, 1000000000))
  local body = '{"intent":{"id":"i","name":"fallback"},"userRequest":{"timezone":"Asia/Seoul",' ..
    '"utterance":"a koala surfing a wave, watercolor","lang":"ko","user":{"id":"' .. user ..
    '","type":"botUserKey","properties":{}},"params":{"surface":"Kakaotalk.plusfriend"},' ..
    '"callbackUrl":"https://bot-api.kakao.com/v1/bots/b/callback/' .. user .. '"},' ..
    '"bot":{"id":"b","name":"bench"},"action":{"name":"s","params":{},"detailParams":{},"id":"a"}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
