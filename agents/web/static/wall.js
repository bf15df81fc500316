// The conference wall: polls this site's feed every second and redraws the leaderboard
// and the award ticker in place. Text goes in with textContent only, never as HTML.
"use strict";
(function () {
  const root = document.querySelector(".wall");
  if (!root) return;
  const community = root.dataset.community;
  const feed = "/c/" + encodeURIComponent(community) + "/wall/feed";
  const board = root.querySelector("[data-board]");
  const ticker = root.querySelector("[data-awards]");
  const status = root.querySelector("[data-status]");
  const INTERVAL_MS = 1000;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) {
      const bdi = document.createElement("bdi");
      bdi.textContent = text;
      node.appendChild(bdi);
    }
    return node;
  }

  function drawBoard(entries) {
    const rows = entries.map(function (e) {
      const li = document.createElement("li");
      li.appendChild(el("span", "rank", String(e.rank)));
      li.appendChild(el("span", "who", e.member_id));
      li.appendChild(el("span", "num", e.score.toLocaleString("en")));
      return li;
    });
    board.replaceChildren.apply(board, rows);
  }

  function drawAwards(awards) {
    const known = new Set(Array.from(ticker.children, function (li) { return li.dataset.award; }));
    const items = awards.map(function (a) {
      const li = document.createElement("li");
      li.dataset.award = a.award_id;
      if (!known.has(a.award_id)) li.className = "new";
      const img = document.createElement("img");
      img.src = a.image; img.alt = ""; img.width = 56; img.height = 56;
      const text = document.createElement("div");
      text.appendChild(el("strong", "", a.member_id));
      text.appendChild(document.createElement("br"));
      text.appendChild(el("span", "", a.badge_name));
      li.appendChild(img);
      li.appendChild(text);
      return li;
    });
    ticker.replaceChildren.apply(ticker, items);
  }

  async function refresh() {
    try {
      const reply = await fetch(feed, { cache: "no-store" });
      if (!reply.ok) throw new Error("feed answered " + reply.status);
      const body = await reply.json();
      drawBoard(body.leaderboard.entries);
      drawAwards(body.awards);
      status.textContent = "live";
      status.classList.remove("stale");
    } catch (err) {
      status.textContent = "reconnecting";
      status.classList.add("stale");
    } finally {
      setTimeout(refresh, INTERVAL_MS);
    }
  }
  setTimeout(refresh, INTERVAL_MS);
})();
