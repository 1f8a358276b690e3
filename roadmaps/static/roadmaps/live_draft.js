// Live drafts: what the model has written so far of one (concept, content type),
// kept in step with the stream's content_snapshot / content_delta events
// (DESIGN §4 "Live draft", §5 "Live content"). No DOM here: client.js says how
// to read the draft and how to show it.
//
// The offset rule: a snapshot replaces what is held; a delta is appended only
// when its offset is what is held (Unicode code points of Markdown, or items),
// and otherwise the draft is read again over REST. Events that arrive while that
// read is in flight are applied after it, skipping what the read already held.
"use strict";

(function (root) {
  // Code points, as the server counts them: an emoji is one, not two UTF-16 units.
  function codePoints(text) {
    let count = 0;
    for (const _ of text) count += 1; // eslint-disable-line no-unused-vars
    return count;
  }

  function dropCodePoints(text, count) {
    return Array.from(text).slice(count).join("");
  }

  class LiveDraft {
    // kind: "text" (a tutorial's Markdown) or "items" (resources, questions).
    // read(): a promise of the draft (GET …/draft's body); rejects when it fails.
    // show(draft): draws {attemptId, text | items, length, replaced}; called at
    //   most once per `interval` ms. `replaced` is true when what was held was
    //   thrown away (a new attempt, a re-ask, a re-read) since the last call.
    // failed(error): the read failed; nothing more is read or shown.
    constructor({ kind, read, show, failed, interval = 100 }) {
      this.kind = kind;
      this.read = read;
      this.draw = show;
      this.failed = failed;
      this.interval = interval;
      this.held = null; // {attemptId, text | items, length}; null until the first state
      this.replaced = true;
      this.pending = null; // events received while a read is in flight
      this.timer = null;
      this.lastShown = 0;
      this.stopped = false;
    }

    // Reads the draft, unless a read is already in flight.
    start() {
      if (this.stopped || this.pending) return;
      this.pending = [];
      this.read().then(
        (draft) => this.afterRead(draft),
        (error) => {
          this.stop();
          this.failed(error);
        },
      );
    }

    afterRead(draft) {
      if (this.stopped) return;
      const events = this.pending;
      this.pending = null;
      this.replace(draft.attempt_id, this.content(draft));
      // Some of these may be older than the read: what it held is skipped.
      for (const event of events) {
        if (!this.apply(event, { tolerant: true })) return this.start();
      }
      this.schedule();
    }

    // One content_snapshot or content_delta of this pair.
    receive(event) {
      if (this.stopped) return;
      if (this.pending) {
        this.pending.push(event);
        return;
      }
      if (!this.apply(event, { tolerant: false })) return this.start();
      this.schedule();
    }

    // False when the event does not follow what is held: the draft must be read.
    apply(event, { tolerant }) {
      const content = this.content(event);
      if (event.type === "content_snapshot") {
        this.replace(event.attempt_id, content);
        return true;
      }
      const held = this.held;
      if (!held || event.attempt_id !== held.attemptId) return false;
      const size = this.kind === "text" ? codePoints(content) : content.length;
      if (event.offset === held.length) {
        this.append(content, size);
        return true;
      }
      if (!tolerant || event.offset > held.length) return false;
      // A read already held the start (or all) of this event.
      const overlap = held.length - event.offset;
      if (overlap < size) {
        const rest = this.kind === "text" ? dropCodePoints(content, overlap) : content.slice(overlap);
        this.append(rest, size - overlap);
      }
      return true;
    }

    content(source) {
      const value = source[this.kind];
      if (this.kind === "text") return typeof value === "string" ? value : "";
      return Array.isArray(value) ? value : [];
    }

    replace(attemptId, content) {
      const length = this.kind === "text" ? codePoints(content) : content.length;
      this.held = { attemptId, [this.kind]: content, length };
      this.replaced = true;
    }

    append(content, size) {
      const held = this.held;
      held[this.kind] = this.kind === "text" ? held.text + content : held.items.concat(content);
      held.length += size;
    }

    schedule() {
      if (this.stopped || this.timer !== null) return;
      const wait = Math.max(0, this.lastShown + this.interval - Date.now());
      this.timer = setTimeout(() => this.flush(), wait);
    }

    // Shows what is held now (a last time before the stored content replaces it).
    flush() {
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = null;
      if (this.stopped || !this.held) return;
      this.lastShown = Date.now();
      const replaced = this.replaced;
      this.replaced = false;
      this.draw({ ...this.held, replaced });
    }

    stop() {
      this.stopped = true;
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = null;
    }
  }

  LiveDraft.codePoints = codePoints;
  root.LiveDraft = LiveDraft;
})(globalThis);
