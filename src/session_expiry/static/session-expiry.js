// session-expiry: the browser side. A plain ES module, no build step.
//
// Configured by the page the server rendered (<script type="application/json"
// id="session-expiry-config">), it
// - counts down from the server's figure (Session-Expires-In, relative seconds),
//   kept as a timestamp, so a throttled tab or a sleeping laptop acts on wake;
// - warns warn_before seconds ahead in an accessible dialog ("Stay signed in");
// - counts typing, clicks and scrolling as activity (at most one extend per
//   touch_interval) unless activity_extends is off;
// - keeps every tab of the browser in step (BroadcastChannel, else storage events);
// - polls /session/status from one leader tab only (Web Locks, else a lease);
// - asks the server before pushing anyone out, then moves every tab to the
//   "session expired" page, saving what was typed (restored after signing in).
//
// App code that uses fetch can use `sessionFetch` (exported, and on
// `window.sessionExpiry`): it sends the CSRF token and handles a 401.

const CONFIG_ID = "session-expiry-config";
const CHANNEL = "session-expiry";
const MESSAGE_KEY = "session-expiry:message";
const LEADER_KEY = "session-expiry:leader";
const DRAFT_PREFIX = "session-expiry:draft:";
const LEADER_LOCK = "session-expiry-leader";
const CONFIRM_LOCK = "session-expiry-confirm";
const RETRY_MS = 3000;
const LATE_MS = 20;  // a timer set for a deadline fires this long after it, never before
const MAX_TIMER_MS = 30000;
const SKIPPED_TYPES = new Set(["password", "hidden", "file", "submit", "button", "reset", "image"]);
const SKIPPED_AUTOCOMPLETE = /^(cc-|one-time-code|new-password|current-password)/;

/** "2 minutes", "1 minute 5 seconds", "45 seconds". */
export function describe(seconds) {
  seconds = Math.max(0, Math.ceil(seconds));
  const minutes = Math.floor(seconds / 60);
  const rest = seconds % 60;
  const parts = [];
  if (minutes) parts.push(`${minutes} minute${minutes === 1 ? "" : "s"}`);
  if (rest || !minutes) parts.push(`${rest} second${rest === 1 ? "" : "s"}`);
  return parts.join(" ");
}

/** The coarse phrase announced to screen readers: it changes a few times, not every second. */
export function announcement(seconds) {
  if (seconds > 120) return `about ${Math.round(seconds / 60)} minutes`;
  const step = [10, 20, 30, 60, 120].find((limit) => seconds <= limit);
  return `less than ${describe(step)}`;
}

export class SessionExpiredError extends Error {
  constructor(reason) {
    super(`session ended: ${reason || "unknown"}`);
    this.name = "SessionExpiredError";
    this.reason = reason;
  }
}

/** One message bus between the tabs of this browser. */
class Bus {
  constructor(onMessage) {
    this.onMessage = onMessage;
    if ("BroadcastChannel" in window) {
      this.channel = new BroadcastChannel(CHANNEL);
      this.channel.onmessage = (event) => onMessage(event.data);
    } else {
      window.addEventListener("storage", (event) => {
        if (event.key === MESSAGE_KEY && event.newValue) onMessage(JSON.parse(event.newValue));
      });
    }
  }

  post(message) {
    if (this.channel) {
      this.channel.postMessage(message);
    } else {
      const unique = { ...message, nonce: Math.random() };  // equal values fire no event
      localStorage.setItem(MESSAGE_KEY, JSON.stringify(unique));
    }
  }
}

export class SessionExpiry {
  constructor(config) {
    this.config = config;
    this.deadline = Date.now() + config.expiresIn * 1000;
    this.lastExtend = Date.now();  // this page load counted as activity
    this.timer = null;
    this.ticker = null;
    this.confirming = false;
    this.retryAt = 0;  // when the server could not be reached, not before this
    this.lastPolled = Date.now();
    this.leaving = false;
    this.tabId = Math.random().toString(36).slice(2);
    this.originalFetch = window.fetch.bind(window);
  }

  start() {
    this.bus = new Bus((message) => this.receive(message));
    this.dialog = this.buildDialog();
    this.restoreDrafts();
    this.observeRequests();
    this.listenForActivity();
    this.interceptLogout();
    for (const event of ["visibilitychange", "focus", "pageshow", "online"]) {
      window.addEventListener(event, () => this.check());
    }
    // A hidden leader tab is throttled by the browser; a tab coming into view asks
    // for itself when the last word from the server is older than a poll interval.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible"
        && Date.now() - this.lastPolled > this.config.pollInterval * 1000) this.poll();
    });
    this.bus.post({ type: "deadline", deadline: this.deadline, lastExtend: this.lastExtend });
    this.electLeader();
    this.check();
    return this;
  }

  // -- time ------------------------------------------------------------------

  get remaining() {
    return (this.deadline - Date.now()) / 1000;
  }

  setDeadline(expiresIn, { share = true, extended = false } = {}) {
    this.deadline = Date.now() + expiresIn * 1000;
    if (extended) this.lastExtend = Date.now();
    if (share) {
      this.bus.post({ type: "deadline", deadline: this.deadline, lastExtend: this.lastExtend,
        lastPolled: this.lastPolled });
    }
    this.check();
  }

  /** Act on the time left: warn, close the warning, or confirm the end with the server. */
  check() {
    if (this.leaving) return;
    clearTimeout(this.timer);
    const remaining = this.remaining;
    if (remaining <= 0) {
      this.confirmEnd();
      return;
    }
    if (remaining <= this.config.warnBefore) this.openDialog();
    else this.closeDialog();
    this.updateRemainingText();
    const warnIn = (remaining - this.config.warnBefore) * 1000;
    const next = warnIn > 0 ? warnIn : remaining * 1000;
    this.timer = setTimeout(() => this.check(), Math.min(next + LATE_MS, MAX_TIMER_MS));
  }

  // -- the server --------------------------------------------------------------

  /** The server's word on the session; throws when there is none (offline, a 503). */
  async status() {
    const response = await this.originalFetch(this.config.statusUrl, {
      credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store",
    });
    if (!response.ok) throw new Error(`status answered ${response.status}`);
    this.lastPolled = Date.now();
    return response.json();
  }

  /** The deadline passed: ask the server (one tab asks, all hear) before pushing anyone out. */
  async confirmEnd() {
    if (this.confirming || this.leaving || Date.now() < this.retryAt) return;
    this.confirming = true;
    let answered = false;
    try {
      await this.withLock(CONFIRM_LOCK, async () => {
        this.act(await this.status());
        answered = true;
      });
    } catch (error) {
      // The server cannot be reached: keep the warning up and ask again soon.
    } finally {
      this.confirming = false;
    }
    if (this.leaving || this.remaining > 0) return;
    // Open when the server answered, with a moment left that has passed since: ask
    // again right after it. No answer (offline, a 503, another tab asking): later.
    const wait = answered ? LATE_MS : RETRY_MS;
    this.retryAt = Date.now() + wait;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.check(), wait);
  }

  /** Act on a /session/status answer, and tell the other tabs. */
  act(status) {
    if (status.state === "active" && status.user === this.config.user) {
      this.setDeadline(status.remaining);
    } else if (status.state === "active") {
      this.leave(null, { share: true });  // someone else signed in since: this page is not theirs
    } else if (status.state === "ended" || status.state === "anonymous") {
      this.leave(status.reason, { share: true });
    }
  }

  async extend() {
    const response = await this.originalFetch(this.config.extendUrl, {
      method: "POST", credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": this.config.csrfToken },
    });
    if (response.status === 401) {
      const body = await response.json().catch(() => ({}));
      this.leave(body.reason, { share: true });
      return;
    }
    if (response.ok) {
      const body = await response.json();
      this.setDeadline(body.remaining, { extended: true });
    }
  }

  // -- one poller per browser ----------------------------------------------------

  electLeader() {
    if (navigator.locks) {
      navigator.locks.request(LEADER_LOCK, () => {
        this.lead();
        return new Promise(() => {});  // held until this tab goes away
      });
    } else {
      this.leaseLeadership();
    }
  }

  lead() {
    setInterval(() => this.poll(), this.config.pollInterval * 1000);
  }

  async poll() {
    if (this.leaving) return;
    try {
      this.act(await this.status());
    } catch (error) {
      // Offline or unavailable: the next poll will tell.
    }
  }

  /** Without Web Locks: the tab holding a fresh lease in localStorage polls. */
  leaseLeadership() {
    const period = this.config.pollInterval * 1000;
    const renew = () => {
      const lease = JSON.parse(localStorage.getItem(LEADER_KEY) || "null");
      const now = Date.now();
      if (!lease || lease.tab === this.tabId || now - lease.at > period * 1.5) {
        localStorage.setItem(LEADER_KEY, JSON.stringify({ tab: this.tabId, at: now }));
      }
    };
    const pollIfLeader = () => {
      const lease = JSON.parse(localStorage.getItem(LEADER_KEY) || "null");
      if (lease && lease.tab === this.tabId) this.poll();
    };
    renew();
    setInterval(renew, period / 3);
    setInterval(pollIfLeader, period);
    window.addEventListener("pagehide", () => {
      const lease = JSON.parse(localStorage.getItem(LEADER_KEY) || "null");
      if (lease && lease.tab === this.tabId) localStorage.removeItem(LEADER_KEY);
    });
  }

  async withLock(name, task) {
    if (!navigator.locks) return task();
    return navigator.locks.request(name, { ifAvailable: true }, (lock) => {
      if (lock) return task();
      // Another tab is asking right now; its answer reaches us through the bus.
      return undefined;
    });
  }

  // -- every tab in step ---------------------------------------------------------

  receive(message) {
    if (message.type === "deadline") {
      this.deadline = message.deadline;
      this.lastExtend = Math.max(this.lastExtend, message.lastExtend || 0);
      this.lastPolled = Math.max(this.lastPolled, message.lastPolled || 0);
      this.check();
    } else if (message.type === "ended") {
      this.leave(message.reason, { share: false });
    }
  }

  /** Move this tab to the expired page, keeping what was typed; tell the others too. */
  leave(reason, { share }) {
    if (this.leaving) return;
    this.leaving = true;
    clearTimeout(this.timer);
    clearInterval(this.ticker);
    if (share) this.bus.post({ type: "ended", reason: reason || null });
    this.saveDrafts();
    const query = new URLSearchParams();
    if (reason) query.set("reason", reason);
    query.set("came_from", location.pathname + location.search);
    location.assign(`${this.config.expiredUrl}?${query}`);
  }

  // -- activity -------------------------------------------------------------------

  listenForActivity() {
    if (!this.config.activityExtends) return;
    const onActivity = () => {
      if (this.leaving || this.dialog.open || this.remaining <= 0) return;
      if (Date.now() - this.lastExtend < this.config.touchInterval * 1000) return;
      this.lastExtend = Date.now();  // one extend at a time, and the others hear of it
      this.extend().catch(() => {});
    };
    for (const event of ["keydown", "pointerdown", "input", "wheel"]) {
      document.addEventListener(event, onActivity, { capture: true, passive: true });
    }
    window.addEventListener("scroll", onActivity, { passive: true });
  }

  // -- requests of the page -----------------------------------------------------------

  /** Every same-origin fetch or XHR answer refreshes the deadline; a 401 pushes. */
  observeRequests() {
    const observe = (url, status, header, readBody) => {
      if (!sameOrigin(url)) return;
      if (header !== null && header !== "") this.setDeadline(Number(header));
      if (status === 401) {
        readBody().then((body) => {
          if (body && body.error === "session_expired") this.leave(body.reason, { share: true });
        }).catch(() => {});
      }
    };
    window.fetch = async (input, init) => {
      const response = await this.originalFetch(input, init);
      observe(response.url, response.status, response.headers.get("Session-Expires-In"),
        () => response.clone().json());
      return response;
    };
    const send = XMLHttpRequest.prototype.send;
    XMLHttpRequest.prototype.send = function (...args) {
      this.addEventListener("loadend", () => {
        if (!this.status) return;
        observe(this.responseURL, this.status, this.getResponseHeader("Session-Expires-In"),
          async () => (this.responseType === "json" ? this.response : JSON.parse(this.responseText)));
      });
      return send.apply(this, args);
    };
  }

  /** fetch for app code: same-origin cookies, the CSRF token on writes to this site,
   *  and a 401 that ends the page (after asking the server) and rejects. */
  async fetch(input, init = {}) {
    const request = input instanceof Request ? input : null;
    const method = (init.method || (request ? request.method : "GET")).toUpperCase();
    const headers = new Headers(init.headers || (request ? request.headers : undefined));
    if (!headers.has("Accept")) headers.set("Accept", "application/json");
    const url = request ? request.url : String(input);
    if (sameOrigin(url) && !["GET", "HEAD", "OPTIONS"].includes(method)) {
      headers.set("X-CSRF-Token", this.config.csrfToken);
    }
    const response = await window.fetch(input, { credentials: "same-origin", ...init, headers });
    if (response.status === 401 && sameOrigin(response.url || url)) {
      const body = await response.clone().json().catch(() => ({}));
      if (body.error !== "session_expired") this.poll();  // the server says where to go
      throw new SessionExpiredError(body.reason);
    }
    return response;
  }

  /** Sign out through fetch, so the other tabs hear of it only once the server ended
   *  the session (the expired page never lies: it sends a live session back). */
  interceptLogout() {
    document.addEventListener("submit", async (event) => {
      const form = event.target;
      if (!(form instanceof HTMLFormElement)) return;
      const action = new URL(form.action, location.href);
      // Only this site's sign-out: a form posting to /logout elsewhere goes its own way.
      if (action.origin !== location.origin || action.pathname !== this.config.logoutUrl) return;
      event.preventDefault();
      this.leaving = true;  // this tab goes to the login page; the others to the expired page
      clearTimeout(this.timer);
      try {
        const response = await this.originalFetch(form.action, {
          method: "POST", body: new FormData(form), credentials: "same-origin",
        });
        if (!response.ok || !response.redirected) throw new Error("not signed out");
        this.bus.post({ type: "ended", reason: "logged_out" });
        location.assign(response.url);  // where the server sent us: the login page
      } catch (error) {
        form.submit();  // offline or refused: the plain form says why
      }
    }, true);
  }

  // -- the warning ---------------------------------------------------------------------

  buildDialog() {
    const dialog = document.createElement("dialog");
    dialog.className = "session-expiry-dialog";
    dialog.setAttribute("role", "alertdialog");
    dialog.setAttribute("aria-modal", "true");
    dialog.setAttribute("aria-labelledby", "session-expiry-title");
    dialog.setAttribute("aria-describedby", "session-expiry-text");
    dialog.innerHTML = `
      <h2 id="session-expiry-title">Your session is about to end</h2>
      <p id="session-expiry-text">For your security, you will be signed out soon unless you
        choose to stay signed in. Anything you typed is kept.</p>
      <p class="session-expiry-countdown" aria-hidden="true">Signing out in <strong></strong></p>
      <p class="session-expiry-live session-expiry-sr" aria-live="polite" aria-atomic="true"></p>
      <div class="session-expiry-actions">
        <button type="button" data-action="stay">Stay signed in</button>
        <button type="button" data-action="sign-out" class="secondary">Sign out now</button>
      </div>`;
    dialog.addEventListener("cancel", (event) => {  // Esc means stay
      event.preventDefault();
      this.stay();
    });
    dialog.addEventListener("keydown", (event) => trapFocus(event, dialog));
    dialog.querySelector("[data-action=stay]").addEventListener("click", () => this.stay());
    dialog.querySelector("[data-action=sign-out]").addEventListener("click", () => this.signOut());
    document.body.append(dialog);
    return dialog;
  }

  openDialog() {
    if (this.dialog.open) return;
    this.returnFocus = document.activeElement;
    this.dialog.showModal();
    this.dialog.querySelector("[data-action=stay]").focus();
    this.lastAnnouncement = null;
    this.tick();
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  closeDialog() {
    if (!this.dialog.open) return;
    clearInterval(this.ticker);
    this.dialog.close();
    if (this.returnFocus && this.returnFocus.isConnected) this.returnFocus.focus();
  }

  tick() {
    const remaining = Math.max(0, this.remaining);
    this.dialog.querySelector(".session-expiry-countdown strong").textContent = describe(remaining);
    this.updateRemainingText();
    const phrase = announcement(remaining);
    if (phrase !== this.lastAnnouncement) {
      this.lastAnnouncement = phrase;
      this.dialog.querySelector(".session-expiry-live").textContent =
        `You will be signed out in ${phrase}.`;
    }
    if (remaining <= 0) this.check();
  }

  async stay() {
    this.closeDialog();
    try {
      await this.extend();
    } catch (error) {
      this.check();  // offline: the warning comes back if time is still running out
    }
  }

  signOut() {
    const form = document.createElement("form");
    form.method = "post";
    form.action = this.config.logoutUrl;
    const token = document.createElement("input");
    token.type = "hidden";
    token.name = "csrf_token";
    token.value = this.config.csrfToken;
    form.append(token);
    document.body.append(form);
    form.requestSubmit();
  }

  /** Minutes in the page; seconds once the warning is up, as in the dialog. */
  updateRemainingText() {
    const remaining = Math.max(0, this.remaining);
    const text = remaining <= this.config.warnBefore
      ? describe(remaining) : describe(Math.ceil(remaining / 60) * 60);
    for (const element of document.querySelectorAll("[data-session-expiry-remaining]")) {
      element.textContent = text;
    }
  }

  // -- typed input survives (WCAG 2.2.5) ------------------------------------------------------

  draftKey() {
    return DRAFT_PREFIX + location.pathname + location.search;
  }

  saveDrafts() {
    const fields = [];
    document.querySelectorAll("form").forEach((form, formIndex) => {
      for (const field of form.elements) {
        if (!keepable(field)) continue;
        const entry = { form: form.id || formIndex, name: field.name || field.id };
        if (field.type === "checkbox" || field.type === "radio") {
          if (field.checked === field.defaultChecked) continue;
          Object.assign(entry, { value: field.value, checked: field.checked });
        } else if (field instanceof HTMLSelectElement) {
          const chosen = [...field.options].filter((option) => option.selected).map((option) => option.value);
          const initial = [...field.options].filter((option) => option.defaultSelected).map((option) => option.value);
          if (chosen.join("\n") === initial.join("\n")) continue;
          entry.selected = chosen;
        } else {
          if (field.value === field.defaultValue) continue;
          entry.value = field.value;
        }
        fields.push(entry);
      }
    });
    if (fields.length) {
      sessionStorage.setItem(this.draftKey(), JSON.stringify({ user: this.config.user, fields }));
    }
  }

  restoreDrafts() {
    // Drafts another user left in this tab are deleted, wherever they were typed.
    for (const other of Object.keys(sessionStorage)) {
      if (!other.startsWith(DRAFT_PREFIX)) continue;
      const draft = JSON.parse(sessionStorage.getItem(other) || "null");
      if (!draft || draft.user !== this.config.user) sessionStorage.removeItem(other);
    }
    const key = this.draftKey();
    const saved = JSON.parse(sessionStorage.getItem(key) || "null");
    sessionStorage.removeItem(key);
    if (!saved || saved.user !== this.config.user) return;  // never hand one user's text to another
    const forms = [...document.querySelectorAll("form")];
    let restored = 0;
    for (const entry of saved.fields) {
      const form = typeof entry.form === "string" ? document.getElementById(entry.form) : forms[entry.form];
      if (!(form instanceof HTMLFormElement)) continue;
      for (const field of form.elements) {
        if ((field.name || field.id) !== entry.name || !keepable(field)) continue;
        if (field.type === "checkbox" || field.type === "radio") {
          if (field.value !== entry.value) continue;
          field.checked = entry.checked;
        } else if (field instanceof HTMLSelectElement) {
          for (const option of field.options) option.selected = entry.selected.includes(option.value);
        } else {
          field.value = entry.value;
        }
        field.dispatchEvent(new Event("input", { bubbles: true }));
        restored += 1;
      }
    }
    if (restored) announce("What you typed before your session ended has been restored.");
  }
}

function keepable(field) {
  if (!(field instanceof HTMLInputElement || field instanceof HTMLTextAreaElement
    || field instanceof HTMLSelectElement)) return false;
  if (!(field.name || field.id) || field.disabled) return false;
  if (field instanceof HTMLInputElement && SKIPPED_TYPES.has(field.type)) return false;
  if (SKIPPED_AUTOCOMPLETE.test(field.getAttribute("autocomplete") || "")) return false;
  return !field.closest("[data-session-expiry-ignore]");
}

function sameOrigin(url) {
  try {
    return new URL(url, location.href).origin === location.origin;
  } catch (error) {
    return false;
  }
}

function trapFocus(event, container) {
  if (event.key !== "Tab") return;
  const focusable = [...container.querySelectorAll("button, [href], input, select, textarea")]
    .filter((element) => !element.disabled);
  const first = focusable[0];
  const last = focusable[focusable.length - 1];
  if (event.shiftKey && document.activeElement === first) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && document.activeElement === last) {
    event.preventDefault();
    first.focus();
  }
}

function announce(text) {
  let region = document.getElementById("session-expiry-status");
  if (!region) {
    region = document.createElement("div");
    region.id = "session-expiry-status";
    region.className = "session-expiry-sr";
    region.setAttribute("role", "status");
    document.body.append(region);
  }
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 100);  // a change screen readers notice
}

let instance = null;

/** fetch with the session's CSRF token; a 401 moves the page to the expired page. */
export async function sessionFetch(input, init) {
  if (!instance) return window.fetch(input, init);
  return instance.fetch(input, init);
}

function boot() {
  const element = document.getElementById(CONFIG_ID);
  if (!element) return;  // not signed in: nothing to count down
  instance = new SessionExpiry(JSON.parse(element.textContent)).start();
  window.sessionExpiry = { fetch: sessionFetch, instance };
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
