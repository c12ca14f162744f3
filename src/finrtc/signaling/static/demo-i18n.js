// finrtc demo page in Chinese: `?lang=zh`, or automatically when the call's compliance script
// is in Chinese (demo.js calls finrtcI18n.useScriptLanguage on compliance.started).
//
// demo.js writes English; this file translates the page's text as it appears (a
// MutationObserver), so demo.js and demo.html stay one language and other changes to them need
// no second copy. Server texts (a Chinese script's prompts) arrive in the script's language
// and pass through unchanged. Names, rooms and raw event data are never translated.
"use strict";

(() => {
  const ZH = {
    "finrtc · Recorded advisory call": "finrtc · 双录理财通话",
    "Recorded advisory call · demo": "双录理财通话 · 演示",
    "Not connected": "未连接",
    "Connecting…": "正在连接…",
    "Live": "录制中",
    "Dismiss": "关闭",
    "Join a call": "加入通话",
    "Calls are recorded completely and every video frame carries a visible time and identity stamp, as financial regulation requires.":
      "按照金融监管要求，通话全程录音录像，每一帧画面都带有可见的时间和身份水印。",
    "Room": "房间",
    "Both parties enter the same room.": "双方请输入同一房间号。",
    "Your name": "您的姓名",
    "Letters, digits and . _ @ - (spaces become -). It appears in the watermark the other party sees.":
      "可使用字母、数字及 . _ @ -（空格会变为 -）。它会出现在对方看到的水印中。",
    "I join as": "我的身份",
    "Advisor (agent)": "理财经理（销售人员）",
    "Customer": "客户",
    "Advisor": "理财经理",
    "Observer": "观察员",
    "Your browser will ask for your camera and microphone. Demo mode: the access token is issued by this server's development endpoint.":
      "浏览器将请求使用您的摄像头和麦克风。演示模式：访问令牌由本服务器的开发端点签发。",
    "Join call": "加入通话",
    "Joining…": "正在加入…",
    "Waiting for the other party…": "正在等待对方…",
    "Other party": "对方",
    "You": "您",
    "Your camera preview": "您的摄像头预览",
    "Mute microphone": "麦克风静音",
    "Unmute microphone": "取消静音",
    "Play the other party's audio": "播放对方的声音",
    "Leave call": "离开通话",
    "Call": "通话",
    "Call details": "通话详情",
    "Sending": "发送",
    "Receiving": "接收",
    "Compliance": "合规",
    "Script: not active": "话术：未启用",
    "Customer face: –": "客户人脸：–",
    "Customer face: visible": "客户人脸：可见",
    "Customer face: not visible": "客户人脸：不可见",
    "Customer face: several faces": "客户人脸：多张人脸",
    "Ready to submit": "可以提交",
    "Not ready to submit": "尚不能提交",
    "Say next": "下一步请说",
    "Alerts": "告警",
    "No alerts.": "无告警。",
    "Your call": "您的通话",
    "This call is recorded. Your advisor sees the same time and identity stamp that you see on their picture.":
      "本次通话全程录音录像。您的理财经理看到的时间和身份水印，与您在其画面上看到的相同。",
    "Your advisor will ask for your consent to the recorded sale.": "理财经理将征求您对本次销售录音录像的同意。",
    "I give my consent": "我同意",
    "Withdraw consent": "撤回同意",
    "You have given your consent. You can withdraw it at any time.": "您已同意。您可以随时撤回。",
    "You have not given your consent.": "您尚未同意。",
    "Room events": "房间事件",
    "Call updates": "通话动态",
    "disconnected": "未连接",
    "connecting…": "正在连接…",
    "live": "实时",
    "Details": "详情",
    "new": "新建",
    "connecting": "正在连接",
    "connected": "已连接",
    "failed": "失败",
    "closed": "已关闭",
    "Recorded session started": "录制会话已开始",
    "Session ended": "会话已结束",
    "Session ended unexpectedly": "会话意外结束",
    "Some earlier events are no longer available on the server.": "服务器上已不再保留部分较早的事件。",
    "Could not get an access token.": "无法获取访问令牌。",
    "Could not use your camera and microphone.": "无法使用您的摄像头和麦克风。",
    "Could not publish your camera and microphone.": "无法发送您的摄像头和麦克风。",
    "Could not start receiving the other party.": "无法开始接收对方。",
    "Could not start watching the other party again.": "无法重新开始观看对方。",
    "Your consent could not be recorded.": "您的同意未能记录。",
    "Your withdrawal could not be recorded.": "您的撤回未能记录。",
    "This browser cannot join the call.": "此浏览器无法加入通话。",
    "Your camera and microphone are no longer reaching the server.": "您的摄像头和麦克风已无法连接到服务器。",
    "The media connection failed. Leave and join again.": "媒体连接失败。请离开后重新加入。",
    "Camera or microphone access was denied. Allow it in the browser's site settings and join again.":
      "摄像头或麦克风权限被拒绝。请在浏览器的网站设置中允许后重新加入。",
    "No camera or microphone was found. Connect one and join again.": "未找到摄像头或麦克风。请连接后重新加入。",
    "The camera or microphone is in use by another application.": "摄像头或麦克风正被其他应用程序使用。",
    "The finrtc server cannot be reached. Is it still running?": "无法连接 finrtc 服务器。服务器是否仍在运行？",
    "finrtc demo page · served by the finrtc server in development mode · no external resources":
      "finrtc 演示页面 · 由开发模式下的 finrtc 服务器提供 · 不加载任何外部资源",
  };
  const ROLE_ZH = { advisor: "理财经理", customer: "客户", observer: "观察员",
                    Advisor: "理财经理", Customer: "客户", Observer: "观察员" };
  const role = (word) => ROLE_ZH[word] || word;
  const FIELD_ZH = { "room name": "房间号", name: "姓名" };
  const MEDIA_ZH = { audio: "音频", video: "视频", "a track": "媒体轨道" };
  // Texts demo.js builds from parts.
  const ZH_PATTERNS = [
    [/^Waiting for the (\w+) to join…$/, (m) => `正在等待${role(m[1])}加入…`],
    [/^The (\w+) left\. Waiting for them to rejoin…$/, (m) => `${role(m[1])}已离开，正在等待其重新加入…`],
    [/^Enter a (room name|name)\.$/, (m) => `请输入${FIELD_ZH[m[1]]}。`],
    [/^The (room name|name) may only use letters, digits and \. _ @ - \(at most 64 characters, starting with a letter or digit\)\.$/,
      (m) => `${FIELD_ZH[m[1]]}只能使用字母、数字及 . _ @ -（最多 64 个字符，以字母或数字开头）。`],
    [/^reconnecting \((\d+)\)…$/, (m) => `正在重新连接（${m[1]}）…`],
    [/^(Advisor|Customer|Observer) (\S+) joined$/, (m) => `${role(m[1])} ${m[2]} 已加入`],
    [/^(Advisor|Customer|Observer) (\S+) left(?: \((.+)\))?$/,
      (m) => `${role(m[1])} ${m[2]} 已离开${m[3] ? "（" + m[3] + "）" : ""}`],
    [/^(Advisor|Customer|Observer) (\S+) publishes (audio|video|a track)(?: \((.+)\))?$/,
      (m) => `${role(m[1])} ${m[2]} 发送${MEDIA_ZH[m[3]]}${m[4] ? "（" + m[4] + "）" : ""}`],
    [/^(Advisor|Customer|Observer) (\S+): face not visible$/, (m) => `${role(m[1])} ${m[2]}：人脸不可见`],
    [/^(Advisor|Customer|Observer) (\S+): face visible( again)?$/, (m) => `${role(m[1])} ${m[2]}：人脸可见`],
    [/^(Advisor|Customer|Observer) (\S+): more than one face in the picture$/,
      (m) => `${role(m[1])} ${m[2]}：画面中有多张人脸`],
  ];
  // User input and raw protocol data stay as they are.
  const UNTRANSLATED = ".event-type, .event-data, #fact-room, #fact-you, #prompt-text";
  const ATTRIBUTES = ["aria-label", "title", "placeholder"];

  let language = "en";
  const chosen = new URLSearchParams(window.location.search).get("lang");
  const explicit = chosen === "zh" || chosen === "en";

  function translate(text) {
    if (language !== "zh") return null;
    const core = text.replace(/\s+/g, " ").trim();
    if (!core) return null;
    let result = Object.prototype.hasOwnProperty.call(ZH, core) ? ZH[core] : null;
    if (result === null) {
      for (const [pattern, build] of ZH_PATTERNS) {
        const match = core.match(pattern);
        if (match) { result = build(match); break; }
      }
    }
    if (result === null) return null;
    // Keep the spacing around inline text ("<input> Customer").
    return (/^\s/.test(text) ? " " : "") + result + (/\s$/.test(text) ? " " : "");
  }

  function skipped(node) {
    const element = node.nodeType === Node.ELEMENT_NODE ? node : node.parentElement;
    return !element || element.closest(UNTRANSLATED) !== null || element.closest("script, style") !== null;
  }

  function translateNode(node) {
    if (skipped(node)) return;
    if (node.nodeType === Node.TEXT_NODE) {
      const result = translate(node.nodeValue);
      if (result !== null && result !== node.nodeValue) node.nodeValue = result;
      return;
    }
    if (node.nodeType !== Node.ELEMENT_NODE) return;
    for (const name of ATTRIBUTES) {
      const value = node.getAttribute(name);
      const result = value === null ? null : translate(value);
      if (result !== null && result !== value) node.setAttribute(name, result);
    }
    for (const child of node.childNodes) translateNode(child);
  }

  function translateAll() {
    document.documentElement.lang = language === "zh" ? "zh-CN" : "en";
    const title = translate(document.title);
    if (title !== null) document.title = title;
    translateNode(document.body);
  }

  function setLanguage(next) {
    if (next !== "zh" || language === "zh") return;
    language = next;
    translateAll();
  }

  const observer = new MutationObserver((records) => {
    if (language !== "zh") return;
    for (const record of records) {
      if (record.type === "characterData") translateNode(record.target);
      else if (record.type === "attributes") translateNode(record.target);
      else for (const node of record.addedNodes) translateNode(node);
    }
  });

  function start() {
    observer.observe(document.body, {
      subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ATTRIBUTES,
    });
    if (explicit) setLanguage(chosen);
  }

  window.finrtcI18n = {
    get language() { return language; },
    // The call's script language (compliance.started) decides unless ?lang= was given.
    useScriptLanguage(scriptLanguage) { if (!explicit) setLanguage(scriptLanguage); },
    translate: (text) => translate(text) ?? text,
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
