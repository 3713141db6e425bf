// KoalaTalk playground: plays KakaoTalk and Kakao i Open Builder against the real webhook.
// Each message is a skill request (v2.0) to /kakao/skill with a one-time callback URL that
// points back at this server; callback answers arrive in a per-page inbox that we poll.
"use strict";

(function () {
  const chat = document.getElementById("chat");
  const quick = document.getElementById("quick");
  const form = document.getElementById("composer");
  const input = document.getElementById("input");
  const send = document.getElementById("send");
  const photo = document.getElementById("photo");
  const status = document.getElementById("status");
  const BOT_ID = "64f0c3a1b2d4e5f60718293a!"; // a development channel's id ends with "!"

  let config = null;
  let session = localStorage.getItem("koalatalk-playground") || "";
  let waiting = []; // bubbles showing a callback's waiting text, oldest first
  let pollTimer = null;

  function newSession() {
    const bytes = new Uint8Array(18);
    crypto.getRandomValues(bytes);
    session = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem("koalatalk-playground", session);
  }
  if (!/^[A-Za-z0-9_-]{16,64}$/.test(session)) newSession();

  // --- drawing the chat ---------------------------------------------------------------------

  function now() {
    const d = new Date();
    const h = d.getHours();
    const m = String(d.getMinutes()).padStart(2, "0");
    return (h < 12 ? "오전 " : "오후 ") + (((h + 11) % 12) + 1) + ":" + m;
  }

  function scroll() {
    chat.scrollTop = chat.scrollHeight;
  }

  function row(who) {
    const el = document.createElement("div");
    el.className = "row " + who;
    if (who === "bot") {
      const last = chat.lastElementChild;
      const grouped = last && last.classList.contains("bot");
      const avatar = document.createElement("div");
      avatar.className = "avatar" + (grouped ? " spacer" : "");
      avatar.textContent = "코";
      el.appendChild(avatar);
      const stack = document.createElement("div");
      stack.className = "stack";
      if (!grouped) {
        const name = document.createElement("div");
        name.className = "name";
        name.textContent = "코알라톡";
        stack.appendChild(name);
      }
      el.appendChild(stack);
    }
    chat.appendChild(el);
    return el;
  }

  // A bubble and its time in a row: the time before my bubbles, after the bot's.
  function stamp(el, who, b) {
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = now();
    if (who === "me") {
      el.appendChild(time);
      el.appendChild(b);
    } else {
      el.querySelector(".stack").appendChild(b);
      el.appendChild(time);
    }
    scroll();
  }

  function bubble(who, text, extra) {
    const el = row(who);
    const b = document.createElement("div");
    b.className = "bubble" + (extra ? " " + extra : "");
    b.textContent = text;
    stamp(el, who, b);
    return b;
  }

  function picture(who, url, alt) {
    const el = row(who);
    const b = document.createElement("div");
    b.className = "bubble picture";
    const img = document.createElement("img");
    img.src = url;
    img.alt = alt || "";
    img.addEventListener("load", () => {
      if (img.naturalWidth < 200) img.classList.add("small");
      scroll();
    });
    b.appendChild(img);
    stamp(el, who, b);
    return img;
  }

  // A carousel of cards (a storybook): side by side, scrolled sideways as in KakaoTalk; each
  // card shows its thumbnail, its description and its buttons (links open in a new tab).
  function carousel(who, data) {
    const el = row(who);
    const strip = document.createElement("div");
    strip.className = "carousel";
    for (const item of data.items || []) {
      const card = document.createElement("div");
      card.className = "bubble card";
      if (item.thumbnail && item.thumbnail.imageUrl) {
        const img = document.createElement("img");
        img.src = item.thumbnail.imageUrl;
        img.alt = item.description || "";
        img.addEventListener("load", scroll);
        card.appendChild(img);
      }
      const text = document.createElement("p");
      text.textContent = item.description || item.title || "";
      card.appendChild(text);
      for (const button of item.buttons || []) {
        if (button.action !== "webLink" || !/^https?:/.test(button.webLinkUrl || "")) continue;
        const a = document.createElement("a");
        a.href = button.webLinkUrl;
        a.target = "_blank";
        a.rel = "noopener";
        a.textContent = button.label;
        card.appendChild(a);
      }
      strip.appendChild(card);
    }
    stamp(el, who, strip);
    return strip;
  }

  function showQuickReplies(replies) {
    quick.textContent = "";
    for (const q of replies || []) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = q.label;
      button.addEventListener("click", () => {
        quick.textContent = "";
        sendText(q.messageText || q.label, "QUICKREPLY_BUTTON_MESSAGE");
      });
      quick.appendChild(button);
    }
    scroll();
  }

  function render(template) {
    for (const out of (template && template.outputs) || []) {
      if (out.simpleText) bubble("bot", out.simpleText.text);
      else if (out.simpleImage) picture("bot", out.simpleImage.imageUrl, out.simpleImage.altText);
      else if (out.carousel) carousel("bot", out.carousel);
      else bubble("bot", JSON.stringify(out));
    }
    showQuickReplies(template && template.quickReplies);
  }

  // --- speaking Kakao's skill protocol --------------------------------------------------------

  function payload(utterance, trigger, media) {
    const user = "pg" + session;
    const params = { surface: "Kakaotalk.plusfriend" };
    if (media) params.media = media;
    return {
      intent: { id: "playground", name: "폴백 블록" },
      userRequest: {
        timezone: "Asia/Seoul",
        utterance: utterance,
        lang: "ko",
        params: params,
        block: { id: "playground", name: "폴백 블록" },
        user: { id: user, type: "botUserKey", properties: { botUserKey: user } },
      },
      bot: { id: BOT_ID, name: "코알라톡" },
      action: { name: "koalatalk_skill", clientExtra: null, params: {}, id: "a1", detailParams: {} },
      flow: { trigger: { type: trigger } },
    };
  }

  async function postJson(url, body, headers) {
    const res = await fetch(url, {
      method: "POST",
      headers: Object.assign({ "Content-Type": "application/json" }, headers || {}),
      body: JSON.stringify(body),
    });
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    return { ok: res.ok, status: res.status, data: data };
  }

  async function roundTrip(body) {
    const cb = await postJson("/playground/api/callback-url", { session: session });
    if (cb.ok) body.userRequest.callbackUrl = cb.data.callbackUrl;
    const headers = {};
    if (config.secret) headers[config.secretHeader] = config.secret;
    const typing = bubble("bot", "입력 중", "waiting");
    typing.closest(".row").classList.add("typing");
    let res;
    try {
      res = await postJson(config.skillUrl, body, headers);
    } finally {
      typing.closest(".row").remove();
    }
    if (!res.ok || !res.data) {
      bubble("bot", "서버가 " + res.status + "로 답했어요: " + JSON.stringify(res.data), "error");
      return;
    }
    if (res.data.useCallback) {
      const text = (res.data.data && res.data.data.text) || "잠시만 기다려 주세요";
      waiting.push(bubble("bot", text, "waiting"));
      poll(400);
    } else {
      render(res.data.template);
    }
  }

  async function sendText(text, trigger) {
    text = text.trim();
    bubble("me", text);
    await guarded(() => roundTrip(payload(text, trigger || "TEXT_INPUT")));
  }

  async function sendPhoto(file) {
    if (file.type.startsWith("image/")) picture("me", URL.createObjectURL(file), file.name);
    else bubble("me", "파일: " + file.name);
    await guarded(async () => {
      const data = new FormData();
      data.append("photo", file);
      const res = await fetch("/playground/upload", { method: "POST", body: data });
      let answer = null;
      try {
        answer = await res.json();
      } catch (e) {
        answer = null;
      }
      if (!res.ok || !answer || !answer.url) {
        const why = answer && answer.error ? answer.error : config.tooBig;
        bubble("bot", why, "error");
        return;
      }
      // Like a photo dropped into KakaoTalk: the utterance is its URL.
      await roundTrip(payload(answer.url, "IMAGE_UPLOAD", { type: "image", url: answer.url }));
    });
  }

  async function guarded(work) {
    send.disabled = true;
    try {
      await work();
    } catch (e) {
      bubble("bot", "연결에 실패했어요: " + e, "error");
    } finally {
      send.disabled = false;
      input.focus();
    }
  }

  // --- callback answers -----------------------------------------------------------------------

  function poll(delay) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(checkInbox, delay);
  }

  async function checkInbox() {
    try {
      const res = await fetch("/playground/api/inbox/" + session, { cache: "no-store" });
      if (res.ok) {
        const data = await res.json();
        for (const message of data.messages || []) {
          const shown = waiting.shift();
          if (shown) shown.classList.remove("waiting");
          render(message.template);
        }
      }
    } catch (e) {
      status.textContent = "서버에 연결하지 못했어요";
    }
    poll(waiting.length ? 500 : 4000);
  }

  // --- wiring ---------------------------------------------------------------------------------

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value;
    if (!text.trim() || send.disabled) return;
    input.value = "";
    quick.textContent = "";
    sendText(text);
  });

  photo.addEventListener("change", () => {
    const file = photo.files && photo.files[0];
    photo.value = "";
    if (file) {
      quick.textContent = "";
      sendPhoto(file);
    }
  });

  document.getElementById("reset").addEventListener("click", () => {
    newSession();
    waiting = [];
    chat.querySelectorAll(".row").forEach((el) => el.remove());
    quick.textContent = "";
    sendText("안녕하세요");
  });

  fetch("/playground/api/config", { cache: "no-store" })
    .then((res) => res.json())
    .then((data) => {
      config = data;
      status.textContent = "playground · " + data.preset + " · 개발 모드";
      document.body.dataset.ready = "1";
      poll(0);
      input.focus();
    })
    .catch(() => {
      status.textContent = "설정을 읽지 못했어요";
    });
})();
