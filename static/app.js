// DeepTalk browser demo: microphone/file → /realtime WebSocket → streamed text + audio playback.
// State for automated checks lives in window.demo (chunks, samples played, latencies, transcript).
"use strict";

const $ = (id) => document.getElementById(id);
const demo = (window.demo = {
  connected: false, responses: 0, chunks: 0, samplesQueued: 0, firstAudioMs: null, serverFirstAudioMs: null,
  transcript: "", errors: [], playing: false, done: false, playedSeconds: 0,
});

let ws = null;
let ctx = null;              // AudioContext for capture and playback
let playHead = 0;            // when the next received chunk starts playing (ctx time)
let endOfInput = null;       // performance.now() when the user's turn ended (commit)
let answerEl = null;
let recorder = null;         // {stream, source, node}

function log(cls, text) {
  const p = document.createElement("div");
  p.className = cls;
  p.textContent = text;
  $("log").appendChild(p);
  return p;
}

function audioContext() {
  if (!ctx) ctx = new AudioContext();
  if (ctx.state === "suspended") ctx.resume();
  return ctx;
}

function setConnected(on) {
  demo.connected = on;
  $("status").textContent = on
    ? "connected: record, upload or type a question"
    : "not connected: press Connect to start";
  for (const id of ["record", "file", "text", "send"]) $(id).disabled = !on;
  $("connect").textContent = on ? "Disconnect" : "Connect";
}

function send(obj) { ws.send(JSON.stringify(obj)); }

function b64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function bytesToB64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function floatToPcm16(f32) {
  const out = new Int16Array(f32.length);
  for (let i = 0; i < f32.length; i++) out[i] = Math.max(-1, Math.min(1, f32[i])) * 32767;
  return out;
}

function pcmToFloat(bytes, format) {
  if (format === "float32") return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const i16 = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  const f = new Float32Array(i16.length);
  for (let i = 0; i < i16.length; i++) f[i] = i16[i] / 32767;
  return f;
}

function playChunk(ev) {
  const c = audioContext();
  const samples = pcmToFloat(b64ToBytes(ev.delta), ev.format);
  if (!samples.length) return;
  const buf = c.createBuffer(1, samples.length, ev.sample_rate);
  buf.copyToChannel(samples, 0);
  const src = c.createBufferSource();
  src.buffer = buf;
  src.connect(c.destination);
  playHead = Math.max(playHead, c.currentTime + 0.02);
  src.start(playHead);
  playHead += buf.duration;
  demo.playing = true;
  src.onended = () => { demo.playedSeconds += buf.duration; };
  demo.chunks += 1;
  demo.samplesQueued += samples.length;
  $("m-audio").textContent = `${(demo.samplesQueued / ev.sample_rate).toFixed(2)} s in ${demo.chunks} chunks`;
}

function onEvent(ev) {
  switch (ev.type) {
    case "session.created": {
      const sel = $("voice");
      for (const v of ev.session.voices) {
        const o = document.createElement("option");
        o.value = o.textContent = v;
        sel.appendChild(o);
      }
      break;
    }
    case "response.created":
      answerEl = log("bot", "");
      demo.done = false;
      $("cancel").disabled = false;
      break;
    case "response.text.delta":
      if (!answerEl) answerEl = log("bot", "");
      answerEl.textContent += ev.delta;
      demo.transcript += ev.delta;
      break;
    case "response.audio.delta":
      if (demo.firstAudioMs === null && endOfInput !== null) {
        demo.firstAudioMs = performance.now() - endOfInput;
        $("m-first").textContent = `${demo.firstAudioMs.toFixed(0)} ms`;
      }
      playChunk(ev);
      break;
    case "response.done": {
      const t = ev.response.timings;
      demo.responses += 1;
      demo.done = true;
      demo.serverFirstAudioMs = t.first_audio_ms;
      $("m-server").textContent = t.first_audio_ms == null ? "–" : `${t.first_audio_ms.toFixed(0)} ms`;
      $("m-rtf").textContent = t.rtf == null ? "–" : t.rtf.toFixed(3);
      $("cancel").disabled = true;
      if (ev.response.reason !== "complete") log("user", `(${ev.response.reason})`);
      answerEl = null;
      break;
    }
    case "error":
      demo.errors.push(ev.error);
      log("err", `error ${ev.error.code}: ${ev.error.message}`);
      break;
  }
}

function connect() {
  return new Promise((resolve, reject) => {
    const key = $("key").value.trim();
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/realtime` +
      (key ? `?api_key=${encodeURIComponent(key)}` : "");
    ws = new WebSocket(url);
    ws.onopen = () => { setConnected(true); resolve(); };
    ws.onclose = () => setConnected(false);
    ws.onerror = () => { demo.errors.push({ code: "socket", message: "WebSocket error" }); reject(); };
    ws.onmessage = (m) => onEvent(JSON.parse(m.data));
  });
}

function startResponse() {
  send({ type: "session.update", session: { voice: $("voice").value || null, speak: $("speak").checked } });
  send({ type: "input_audio_buffer.commit" });
  endOfInput = performance.now();
  demo.firstAudioMs = null;
  send({ type: "response.create" });
}

async function startRecording() {
  const c = audioContext();
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false } });
  const source = c.createMediaStreamSource(stream);
  const node = c.createScriptProcessor(4096, 1, 1);
  send({ type: "session.update", session: { input_sample_rate: c.sampleRate } });
  node.onaudioprocess = (e) => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(floatToPcm16(e.inputBuffer.getChannelData(0)).buffer);
  };
  source.connect(node);
  node.connect(c.destination);
  recorder = { stream, source, node };
  $("record").textContent = "■ Stop";
  $("record").classList.add("rec");
  log("user", "🎤 (speaking…)");
}

function stopRecording() {
  if (!recorder) return;
  recorder.node.disconnect();
  recorder.source.disconnect();
  recorder.stream.getTracks().forEach((t) => t.stop());
  recorder = null;
  $("record").textContent = "● Record";
  $("record").classList.remove("rec");
  startResponse();
}

async function sendFile(file) {
  const c = audioContext();
  const audio = await c.decodeAudioData(await file.arrayBuffer());
  const mono = audio.getChannelData(0);
  send({ type: "session.update", session: { input_sample_rate: audio.sampleRate } });
  const pcm = new Uint8Array(floatToPcm16(mono).buffer);
  for (let i = 0; i < pcm.length; i += 32000) {
    send({ type: "input_audio_buffer.append", audio: bytesToB64(pcm.subarray(i, i + 32000)) });
  }
  log("user", `📎 ${file.name} (${audio.duration.toFixed(1)} s)`);
  startResponse();
}

$("connect").onclick = () => (demo.connected ? ws.close() : connect());
$("record").onclick = () => (recorder ? stopRecording() : startRecording());
$("file").onchange = (e) => e.target.files.length && sendFile(e.target.files[0]);
$("cancel").onclick = () => send({ type: "response.cancel" });
$("send").onclick = () => {
  const text = $("text").value.trim();
  if (!text) return;
  log("user", text);
  send({ type: "session.update", session: { voice: $("voice").value || null, speak: $("speak").checked } });
  send({ type: "conversation.item.create", item: { role: "user", content: [{ type: "input_text", text }] } });
  endOfInput = performance.now();
  demo.firstAudioMs = null;
  send({ type: "response.create" });
  $("text").value = "";
};
$("text").onkeydown = (e) => e.key === "Enter" && $("send").onclick();

// ?auto=SECONDS: connect, record the (fake) microphone for that long, then ask for the answer (used by tests).
const params = new URLSearchParams(location.search);
if (params.has("key")) $("key").value = params.get("key");
if (params.has("auto")) {
  connect().then(async () => {
    await startRecording();
    setTimeout(stopRecording, 1000 * Number(params.get("auto") || 2));
  });
}
