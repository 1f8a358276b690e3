// The reference web client: one roadmap page kept live over the public API.
//
// It uses only what any frontend gets (DESIGN §4, §5; docs/events.md):
// REST with the session cookie (CSRF header on writes) and the roadmap's event
// stream, /api/v1/ws/roadmaps/{id}?after=<id>, starting from the newest event id
// when the page was rendered (config.cursor), so a roadmap's history is never
// replayed. No polling: on every (re)connect it reads the roadmap once over REST,
// so statuses are true even if events were pruned, and events that arrive while
// that read is in flight are applied again after it, so an answer older than an
// event never wins.
//
// Model output reaches the page only as text (textContent), except the tutorial's
// Markdown, which is rendered with raw HTML escaped and then sanitised (DOMPurify),
// the same way while it is being written (live_draft.js keeps the text in step)
// as once it is stored.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("client-config").textContent);
  const words = config.strings;
  const api = config.api;
  const roadmapUrl = `${api}/roadmaps/${config.roadmapId}/`;
  const STATUSES = Object.keys(words.statuses);

  const connection = document.getElementById("connection");
  const notice = document.getElementById("notice");
  const announcer = document.getElementById("announcer");

  // The last stored event's global id (never a progress event's null); at first,
  // the newest one when the page's statuses were read.
  let cursor = Number(config.cursor) || 0;
  let socket = null;
  let backoff = 0;
  let stopped = false;
  let buffered = null; // events received while a REST read is in flight
  let refreshing = Promise.resolve();
  const seenTasks = new Map(); // pair key -> task ids whose events already arrived
  const knownTasks = new Set(); // every task named by an event, a REST read or an answer
  let taskRefresh = null;

  function format(template, values) {
    return template.replace(/%\((\w+)\)s/g, (_, name) => String(values[name] ?? ""));
  }

  function badgeOf(conceptId, contentType) {
    const concept = document.querySelector(`.concept[data-concept="${CSS.escape(conceptId)}"]`);
    return concept && concept.querySelector(`.badge[data-type="${CSS.escape(contentType)}"]`);
  }

  function conceptName(badge) {
    return badge.closest(".concept").dataset.name;
  }

  // --- Badges -----------------------------------------------------------------

  function setStatus(conceptId, contentType, status, { announce = true } = {}) {
    const badge = badgeOf(conceptId, contentType);
    if (!badge || !STATUSES.includes(status)) return;
    const changed = badge.dataset.status !== status;
    badge.dataset.status = status;
    const values = { type: words.types[contentType], status: words.statuses[status] };
    badge.querySelector(".badge-text").textContent = format(words.badge, values);
    badge.querySelector(".retry").hidden = status === "generating";
    const progress = badge.querySelector("progress");
    if (status !== "generating") {
      progress.hidden = true;
      progress.value = 0;
    }
    if (changed && announce) {
      announcer.textContent = format(words.announce, { ...values, concept: conceptName(badge) });
    }
    if (changed) viewedStatusChanged(conceptId, contentType, status);
  }

  function setProgress(conceptId, contentType, percentage) {
    const badge = badgeOf(conceptId, contentType);
    if (!badge || badge.dataset.status !== "generating") return;
    const progress = badge.querySelector("progress");
    progress.value = Math.max(0, Math.min(100, Number(percentage) || 0));
    progress.textContent = `${progress.value}%`;
    progress.hidden = false;
  }

  function applyDetail(detail) {
    for (const stage of detail.framework.stages) {
      for (const module of stage.modules) {
        for (const concept of module.concepts) {
          const id = concept.concept_id;
          Object.values(concept.tasks || {}).forEach((task) => task && knownTasks.add(task));
          setStatus(id, "tutorial", concept.content_status, { announce: false });
          setStatus(id, "resources", concept.resources_status, { announce: false });
          setStatus(id, "quiz", concept.quiz_status, { announce: false });
        }
      }
    }
  }

  // --- Events -----------------------------------------------------------------

  const EVENT_STATUS = {
    concept_start: "generating",
    concept_complete: "completed",
    concept_failed: "failed",
  };

  // A task started elsewhere (another tab, the CLI, an admin action) marked all
  // its pairs `generating` at once, but names each only when it starts: read the
  // roadmap once when a new task shows up, instead of showing `failed` until then.
  function noteTask(taskId) {
    if (!taskId || knownTasks.has(taskId)) return;
    knownTasks.add(taskId);
    if (taskRefresh) return;
    taskRefresh = setTimeout(() => {
      taskRefresh = null;
      refresh();
    }, 200);
  }

  function apply(event) {
    noteTask(event.task_id);
    if (!event.concept_id || !event.content_type) return;
    if (event.type === "concept_progress") {
      setProgress(event.concept_id, event.content_type, event.progress_percentage);
      return;
    }
    const status = event.type === "status_changed" ? event.status : EVENT_STATUS[event.type];
    if (!status) return;
    if (event.task_id) {
      const key = `${event.concept_id}/${event.content_type}`;
      if (!seenTasks.has(key)) seenTasks.set(key, new Set());
      seenTasks.get(key).add(event.task_id);
    }
    setStatus(event.concept_id, event.content_type, status);
  }

  function receive(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (!event || typeof event.type !== "string" || event.type === "pong") return;
    // Live text is not a status: never re-applied after a REST read.
    if (event.type === "content_snapshot" || event.type === "content_delta") return receiveLive(event);
    apply(event);
    if (buffered) buffered.push(event);
    if (typeof event.id === "number" && event.id > cursor) cursor = event.id;
  }

  // One REST read at a time; the events that arrive meanwhile are applied again
  // after it, so the page ends on the newest state whichever answered first.
  function refresh() {
    refreshing = refreshing.then(async () => {
      buffered = [];
      try {
        applyDetail(await request("GET", roadmapUrl));
      } catch (error) {
        showNotice(format(words.requestFailed, { detail: error.message }));
      } finally {
        const again = buffered;
        buffered = null;
        again.forEach(apply);
      }
    });
    return refreshing;
  }

  // --- The event stream -------------------------------------------------------

  function setConnection(state) {
    connection.dataset.state = state;
    connection.textContent = words[state];
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}${config.wsPath}?after=${cursor}`;
    const ws = new WebSocket(url);
    socket = ws;
    ws.onopen = () => {
      backoff = 0;
      setConnection("connected");
      refresh();
    };
    ws.onmessage = receive;
    ws.onclose = (close) => {
      if (socket !== ws) return;
      socket = null;
      if (close.code === 4410) {
        // Events above the cursor were pruned: read the state, resume where told.
        // Without a cursor in the reason, reconnecting would be refused again at
        // once, forever: stop, and a reload starts from the newest event.
        const resume = Number(String(close.reason).split("after=")[1]);
        if (!close.reason || !Number.isFinite(resume)) return stop("stopped");
        cursor = resume;
        refresh().then(connect);
        return;
      }
      if (close.code === 4401) return stop("signedOut");
      if (close.code === 4403 || close.code === 4404 || close.code === 4400) return stop("stopped");
      setConnection("reconnecting");
      reconnectLater();
    };
  }

  function reconnectLater() {
    if (stopped) return;
    // 0.5 s, 1 s, 2 s … up to 5 s, with jitter so a restarted server is not hit at once.
    const delay = Math.min(5000, 500 * 2 ** backoff) * (0.75 + Math.random() * 0.5);
    backoff += 1;
    setTimeout(connect, delay);
  }

  function stop(reason) {
    stopped = true;
    setConnection(reason);
  }

  // --- Actions ----------------------------------------------------------------

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  class RequestError extends Error {
    constructor(status, body) {
      super((body && typeof body.detail === "string" && body.detail) || (body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  async function request(method, url, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = csrfToken();
    }
    const response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) throw new RequestError(response.status, data);
    return data;
  }

  function showNotice(text) {
    notice.textContent = text;
  }

  async function retryOne(badge) {
    const conceptId = badge.closest(".concept").dataset.concept;
    const contentType = badge.dataset.type;
    const button = badge.querySelector(".retry");
    button.disabled = true;
    try {
      const url = `${roadmapUrl}concepts/${encodeURIComponent(conceptId)}/${contentType}/retry`;
      const answer = await request("POST", url, {});
      knownTasks.add(answer.data.task_id);
      // Already `generating` in the database (202); unless this task's own events
      // have overtaken the answer, show it now.
      const seen = seenTasks.get(`${conceptId}/${contentType}`);
      if (!(seen && seen.has(answer.data.task_id))) setStatus(conceptId, contentType, "generating");
      showNotice(answer.message || "");
    } catch (error) {
      showNotice(format(words.requestFailed, { detail: error.message }));
      if (error.status === 409) refresh();
    } finally {
      button.disabled = false;
    }
  }

  async function startMany(button, url, body) {
    button.disabled = true;
    try {
      const answer = await request("POST", url, body);
      const data = answer.data || {};
      if (data.task_id) knownTasks.add(data.task_id);
      let text = data.task_id ? format(words.started, { total: data.total }) : words.nothing;
      if (data.skipped && data.skipped.length) {
        text += " " + format(words.skipped, { count: data.skipped.length });
      }
      showNotice(text);
      // The started pairs are `generating` in the database already: read them.
      if (data.task_id) await refresh();
    } catch (error) {
      showNotice(format(words.requestFailed, { detail: error.message }));
    } finally {
      button.disabled = false;
    }
  }

  // --- Viewers ----------------------------------------------------------------

  const viewer = document.getElementById("viewer");
  const viewerTitle = document.getElementById("viewer-title");
  const viewerBody = document.getElementById("viewer-body");
  document.getElementById("viewer-close").addEventListener("click", () => viewer.close());

  function escapeHtml(text) {
    const div = document.createElement("div");
    div.textContent = text;
    return div.innerHTML;
  }

  // Raw HTML in model Markdown is shown as the text it is, never as markup; the
  // result is sanitised anyway (links to javascript:, anything marked let through).
  // An image becomes a link to it: loading it would tell whatever host the model
  // named that this reader opened the page (the policy allows no remote images).
  const markdown = new marked.Marked({
    gfm: true,
    renderer: {
      html(token) {
        const text = escapeHtml(token.text);
        return token.block ? `<p>${text}</p>` : text;
      },
      image(token) {
        const link = document.createElement("a");
        link.setAttribute("href", token.href);
        link.textContent = token.text || token.href;
        return link.outerHTML;
      },
    },
  });
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      node.setAttribute("rel", "noopener noreferrer");
      node.setAttribute("target", "_blank");
    }
  });

  function renderMarkdown(text) {
    return DOMPurify.sanitize(markdown.parse(String(text || "")), {
      USE_PROFILES: { html: true },
      FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "img"],
    });
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function safeHref(url) {
    try {
      const parsed = new URL(String(url));
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  function resourceEntry(item) {
    const entry = element("li");
    const href = safeHref(item.url);
    const title = href ? element("a", item.title) : element("span", item.title);
    if (href) {
      title.href = href;
      title.rel = "noopener noreferrer";
      title.target = "_blank";
    }
    entry.append(title);
    const meta = [item.type, item.estimated_minutes ? format(words.minutes, { minutes: item.estimated_minutes }) : ""];
    entry.append(element("span", ` (${meta.filter(Boolean).join(", ")})`, "meta"));
    if (item.description) entry.append(element("p", item.description));
    return entry;
  }

  function questionEntry(question) {
    const entry = element("li");
    entry.append(element("p", question.question, "question"));
    const options = element("ol", null, "options");
    options.type = "A";
    (question.options || []).forEach((option) => options.append(element("li", option)));
    entry.append(options);
    const letters = (question.correct_answers || []).map((i) => String.fromCharCode(65 + i));
    const answer = element("details");
    answer.append(element("summary", format(words.answer, { answers: letters.join(", ") })));
    if (question.explanation) answer.append(element("p", question.explanation));
    entry.append(answer);
    return entry;
  }

  // The element each viewer fills, and how one item (a resource, a question) is drawn.
  const LAYOUT = {
    tutorial: { container: () => element("article", null, "tutorial") },
    resources: { container: () => element("ul", null, "resources"), entry: resourceEntry },
    quiz: { container: () => element("ol", null, "quiz"), entry: questionEntry },
  };

  const VIEWERS = {
    tutorial(data) {
      const article = LAYOUT.tutorial.container();
      article.innerHTML = renderMarkdown(data.markdown);
      return article;
    },
    resources(data) {
      if (!data.items.length) return element("p", words.noResources);
      const list = LAYOUT.resources.container();
      data.items.forEach((item) => list.append(resourceEntry(item)));
      return list;
    },
    quiz(data) {
      const list = LAYOUT.quiz.container();
      data.questions.forEach((question) => list.append(questionEntry(question)));
      return list;
    },
  };

  // The pair the viewer shows: {conceptId, contentType, live: LiveDraft or null}.
  let viewed = null;

  function pairUrl(pair) {
    return `${roadmapUrl}concepts/${encodeURIComponent(pair.conceptId)}/${pair.contentType}`;
  }

  function view(badge) {
    const conceptId = badge.closest(".concept").dataset.concept;
    const contentType = badge.dataset.type;
    viewerTitle.textContent = `${conceptName(badge)} — ${words.types[contentType]}`;
    viewer.dataset.type = contentType;
    if (!viewer.open) viewer.showModal();
    show({ conceptId, contentType }, badge.dataset.status);
  }

  // Live while the pair is generating, its stored content otherwise.
  function show(pair, status, { keep = false } = {}) {
    if (viewed && viewed.live) viewed.live.stop();
    viewed = { conceptId: pair.conceptId, contentType: pair.contentType, live: null };
    viewerBody.removeAttribute("aria-busy");
    if (!keep) {
      viewerBody.replaceChildren(element("p", words.loading));
      viewer.dataset.state = "loading";
    }
    if (status === "generating") showLive(viewed);
    else showStored(viewed);
  }

  async function showStored(pair) {
    let content;
    try {
      content = VIEWERS[pair.contentType](await request("GET", pairUrl(pair)));
    } catch (error) {
      const status = error.body && error.body.status;
      const text = error.status === 404 && status
        ? format(words.notYet, { status: words.statuses[status] || status })
        : format(words.requestFailed, { detail: error.message });
      content = element("p", text);
    }
    if (viewed !== pair) return; // closed, or showing something newer
    viewerBody.replaceChildren(content);
    viewer.dataset.state = "ready";
  }

  // --- Live drafts (live_draft.js keeps the text; this draws it) --------------

  function showLive(pair) {
    viewerBody.setAttribute("aria-busy", "true");
    pair.live = new LiveDraft({
      kind: pair.contentType === "tutorial" ? "text" : "items",
      read: () => request("GET", `${pairUrl(pair)}/draft`),
      show: (draft) => drawLive(pair, draft),
      failed: (error) => {
        if (viewed !== pair) return;
        viewerBody.removeAttribute("aria-busy");
        // 404: no longer generating; its status event is on its way.
        if (error.status === 404) return showStored(pair);
        viewerBody.replaceChildren(element("p", format(words.requestFailed, { detail: error.message })));
        viewer.dataset.state = "ready";
      },
    });
    pair.live.start();
  }

  function drawLive(pair, draft) {
    if (viewed !== pair) return;
    // Follow the writing unless the reader scrolled up.
    const following = viewer.scrollHeight - viewer.scrollTop - viewer.clientHeight < 48;
    const layout = LAYOUT[pair.contentType];
    let container = viewerBody.querySelector(":scope > [data-live]");
    if (!container || draft.replaced) {
      container = layout.container();
      container.dataset.live = "";
      viewerBody.replaceChildren(container, element("p", words.writing, "writing"));
    }
    container.dataset.offset = String(draft.length);
    if (draft.text !== undefined) {
      container.innerHTML = renderMarkdown(draft.text);
    } else {
      draft.items.slice(container.childElementCount).forEach((item) => container.append(layout.entry(item)));
    }
    viewer.dataset.state = "live";
    if (following) viewer.scrollTop = viewer.scrollHeight;
  }

  function isViewed(conceptId, contentType) {
    return viewed !== null && viewed.conceptId === conceptId && viewed.contentType === contentType;
  }

  function receiveLive(event) {
    if (isViewed(event.concept_id, event.content_type) && viewed.live) viewed.live.receive(event);
  }

  // concept_complete (or failed, or any change) of the viewed pair: the stored
  // content replaces the live text, which is first shown to its last delta.
  function viewedStatusChanged(conceptId, contentType, status) {
    if (!viewer.open || !isViewed(conceptId, contentType)) return;
    if (status === "generating" && viewed.live && !viewed.live.stopped) return;
    if (viewed.live) viewed.live.flush();
    show(viewed, status, { keep: viewed.live !== null });
  }

  viewer.addEventListener("close", () => {
    if (viewed && viewed.live) viewed.live.stop();
    viewed = null;
  });

  // --- Wiring -----------------------------------------------------------------

  document.addEventListener("click", (click) => {
    const button = click.target.closest("button");
    if (!button) return;
    const badge = button.closest(".badge");
    if (badge && button.classList.contains("retry")) retryOne(badge);
    else if (badge && button.classList.contains("view")) view(badge);
  });
  const retryFailed = document.getElementById("retry-failed");
  retryFailed.addEventListener("click", () =>
    startMany(retryFailed, `${roadmapUrl}concepts/retry-batch`, { statuses: ["failed"] }),
  );
  const generateAll = document.getElementById("generate-all");
  generateAll.addEventListener("click", () =>
    startMany(generateAll, `${roadmapUrl}generate`, {}),
  );

  connect();
})();
