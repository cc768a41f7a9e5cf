// Extra Networks cards (A1111's extraNetworks.js, written for our panes): a tab's pane is fetched the first time it
// is shown, then search, sort, folders, refresh, card clicks and the metadata editor work on it here. The global
// names (cardClicked, tryToRemoveExtraNetworkFromPrompt, selectCheckpoint, extraNetworksEditUserMetadata, ...) are
// A1111's: extension pages put them in their cards' onclick.
(() => {
  if (window.sdExtraNetworks) return;
  const w = window;
  const app = () => (w.gradioApp ? w.gradioApp() : document);
  const TABS = ["txt2img", "img2img"];
  w.activePromptTextarea = w.activePromptTextarea || {};

  function promptBox(tabname, negative) {
    return app().querySelector(`#${tabname}_${negative ? "neg_prompt" : "prompt"} textarea`);
  }

  function separator() {
    const sep = w.opts && w.opts.extra_networks_add_text_separator;
    return typeof sep === "string" ? sep : " ";
  }

  function fire(textarea) {
    if (w.updateInput) w.updateInput(textarea);
    else textarea.dispatchEvent(new Event("input", {bubbles: true}));
  }

  // the prompt box last focused, per tab: embeddings go there (negative prompt included), as in A1111
  document.addEventListener("focusin", (event) => {
    const target = event.target;
    if (!target || target.tagName !== "TEXTAREA") return;
    for (const tab of TABS) {
      if (target.closest(`#${tab}_prompt, #${tab}_neg_prompt`)) w.activePromptTextarea[tab] = target;
    }
  });

  const reNet = /<([^:^>]+:[^:]+):[\d.]+>(.*)/s;
  const reNetG = /<([^:^>]+:[^:]+):[\d.]+>/g;
  const reNeg = /\(([^:^>]+:[\d.]+)\)/;
  const reNegG = /\(([^:^>]+:[\d.]+)\)/g;
  const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

  // A second click on a card takes its text out again: the same network at any weight (with the activation text
  // after it and the separator before it), or the same plain text (an embedding's name).
  w.tryToRemoveExtraNetworkFromPrompt = function tryToRemoveExtraNetworkFromPrompt(textarea, text, isNeg) {
    const sep = separator();
    const m = text.match(isNeg ? reNeg : reNet);
    let value = textarea.value;
    let pos = -1;
    if (m) {
      const key = m[1];
      const after = isNeg ? "" : m[2];
      value = value.replace(isNeg ? reNegG : reNetG, (found, _net, offset) => {
        const fm = found.match(isNeg ? reNeg : reNet);
        if (fm && fm[1] === key && pos < 0) { pos = offset; return ""; }
        return found;
      });
      if (pos < 0) return false;
      if (after && value.substr(pos, after.length) === after) {
        value = value.slice(0, pos) + value.slice(pos + after.length);
      }
    } else {
      const re = new RegExp(`(^|${escapeRe(sep)}|\\s|,)${escapeRe(text)}(?=$|\\s|,)`);
      const found = value.match(re);
      if (!found) return false;
      pos = found.index + found[1].length;
      value = value.slice(0, pos) + value.slice(pos + text.length);
    }
    if (sep && pos >= sep.length && value.substr(pos - sep.length, sep.length) === sep) {
      value = value.slice(0, pos - sep.length) + value.slice(pos);
    } else if (pos === 0 && sep && value.startsWith(sep)) {
      value = value.slice(sep.length);
    }
    textarea.value = value;
    return true;
  };

  w.updatePromptArea = function updatePromptArea(text, textarea, isNeg) {
    if (!textarea || !text) return;
    if (!w.tryToRemoveExtraNetworkFromPrompt(textarea, text, isNeg)) {
      textarea.value = textarea.value ? textarea.value + separator() + text : text;
    }
    fire(textarea);
  };

  // cardClicked(tabname, text, negativeText, allowNegativePrompt); older pages pass (tabname, text, allowNegative)
  w.cardClicked = function cardClicked(tabname, textToAdd, textToAddNegative, allowNegativePrompt) {
    if (typeof textToAddNegative === "boolean") { allowNegativePrompt = textToAddNegative; textToAddNegative = ""; }
    if (textToAddNegative) {
      w.updatePromptArea(textToAdd, promptBox(tabname, false));
      w.updatePromptArea(textToAddNegative, promptBox(tabname, true), true);
    } else {
      const textarea = allowNegativePrompt ? (w.activePromptTextarea[tabname] || promptBox(tabname, false))
        : promptBox(tabname, false);
      w.updatePromptArea(textToAdd, textarea);
    }
  };

  // a Checkpoints card: pick it in the top bar's dropdown, whose own handler loads it
  w.selectCheckpoint = function selectCheckpoint(title) {
    const input = app().querySelector("#setting_sd_model_checkpoint input[role=combobox]");
    if (!input) return false;
    input.focus();
    input.dispatchEvent(new MouseEvent("click", {bubbles: true}));
    const pick = () => {
      const list = document.getElementById(input.getAttribute("aria-controls") || "");
      const option = list && Array.from(list.querySelectorAll("[role=option]"))
        .find((o) => o.getAttribute("aria-label") === title);
      if (!option) return false;
      for (const type of ["mousedown", "mouseup", "click"]) option.dispatchEvent(new MouseEvent(type, {bubbles: true}));
      return true;
    };
    if (!pick()) {
      const observer = new MutationObserver(() => { if (pick()) observer.disconnect(); });
      observer.observe(document.body, {childList: true, subtree: true});
      setTimeout(() => observer.disconnect(), 5000);
    }
    return false;
  };

  // --- panes ---------------------------------------------------------------------------------------------------
  const route = (path, params) => `./sd_extra_networks/${path}?${new URLSearchParams(params)}`;

  function paneState(pane) {
    const q = (sel) => pane.querySelector(sel);
    return {search: q(".extra-network-search")?.value || "", sort: q(".extra-network-sort")?.value,
            dir: q(".extra-network-sortdir")?.dataset.sortdir, tree: q(".extra-network-tree-toggle")?.ariaPressed,
            folder: pane.dataset.folder || ""};
  }

  function restoreState(pane, s) {
    const q = (sel) => pane.querySelector(sel);
    if (q(".extra-network-search")) q(".extra-network-search").value = s.search;
    if (s.sort && q(".extra-network-sort")) q(".extra-network-sort").value = s.sort;
    if (s.dir) setDirection(pane, s.dir);
    if (s.tree) setTree(pane, s.tree === "true");
    pane.dataset.folder = s.folder;
  }

  async function loadPane(pane, refresh) {
    const previous = refresh ? paneState(pane) : null;
    pane.dataset.state = "loading";
    const started = performance.now();
    try {
      const response = await fetch(route("pane", {page: pane.dataset.page, tabname: pane.dataset.tabname,
                                                  refresh: refresh ? "1" : "0"}), {credentials: "same-origin"});
      const text = await response.text();
      if (!response.ok) throw new Error(text);
      pane.dataset.fetchMs = String(Math.round(performance.now() - started));
      pane.innerHTML = text;
      pane.dataset.insertMs = String(Math.round(performance.now() - started));
    } catch (err) {
      pane.innerHTML = "";
      const box = document.createElement("div");
      box.className = "sd-error";
      box.textContent = `Extra Networks: ${err.message || err}`;
      pane.appendChild(box);
    }
    if (previous) restoreState(pane, previous);
    applySort(pane);
    pane.dataset.sortMs = String(Math.round(performance.now() - started));
    applyFilter(pane);
    pane.dataset.state = "loaded";
    pane.dataset.loadMs = String(Math.round(performance.now() - started));
    pane.dispatchEvent(new CustomEvent("extra-networks-loaded", {bubbles: true}));
  }

  function checkPanes() {
    for (const pane of app().querySelectorAll(".extra-network-pane:not([data-state])")) {
      if (pane.offsetParent !== null) loadPane(pane, false);
    }
  }

  function cardText(card) {
    if (card._searchText === undefined) {
      const parts = [card.dataset.name || "", card.dataset.path || ""];
      for (const span of card.querySelectorAll(".search_terms")) parts.push(span.textContent);
      card._searchText = parts.join(" ").toLowerCase().replaceAll("\\", "/");
    }
    return card._searchText;
  }

  function applyFilter(pane) {
    const term = (pane.querySelector(".extra-network-search")?.value || "").trim().toLowerCase();
    const folder = pane.dataset.folder || "";
    for (const card of pane.querySelectorAll(".extra-network-cards > .card")) {
      const path = card.dataset.path || "";
      const inFolder = !folder || path === folder || path.startsWith(folder + "/");
      const hide = !(inFolder && (!term || cardText(card).includes(term)));
      if (card.hidden !== hide) card.hidden = hide;   // untouched cards cost no style work
    }
    for (const button of pane.querySelectorAll(".extra-network-dir")) {
      button.classList.toggle("selected", (button.dataset.path || "") === folder);
    }
  }

  function setDirection(pane, dir) {
    const button = pane.querySelector(".extra-network-sortdir");
    if (!button) return;
    button.dataset.sortdir = dir;
    button.textContent = dir === "Descending" ? "▼" : "▲";
  }

  function setTree(pane, shown) {
    const button = pane.querySelector(".extra-network-tree-toggle");
    const dirs = pane.querySelector(".extra-network-dirs");
    if (button) button.setAttribute("aria-pressed", String(shown));
    if (dirs) dirs.hidden = !shown || !dirs.children.length;
  }

  function applySort(pane) {
    const box = pane.querySelector(".extra-network-cards");
    if (!box) return;
    const key = pane.querySelector(".extra-network-sort")?.value || "default";
    const sign = pane.querySelector(".extra-network-sortdir")?.dataset.sortdir === "Descending" ? -1 : 1;
    if (box.dataset.sorted === `${key}|${sign < 0 ? "True" : "False"}`) return;   // the server's order already
    delete box.dataset.sorted;
    const attr = `sort${key[0].toUpperCase()}${key.slice(1)}`;  // data-sort-date_created → dataset.sortDate_created
    const cards = Array.from(box.children).filter((c) => c.classList.contains("card"));
    const value = (c) => c.dataset[attr] ?? "";
    const numeric = cards.every((c) => value(c) !== "" && !isNaN(Number(value(c))));
    cards.sort((a, b) => {
      const va = value(a); const vb = value(b);
      const d = numeric ? Number(va) - Number(vb) : va.localeCompare(vb, undefined, {numeric: true});
      return sign * (d || (a.dataset.name || "").localeCompare(b.dataset.name || ""));
    });
    const current = Array.from(box.children).filter((c) => c.classList.contains("card"));
    if (cards.every((card, i) => card === current[i])) return;   // already in order (the server's): no DOM work
    const fragment = document.createDocumentFragment();
    for (const card of cards) fragment.appendChild(card);
    box.appendChild(fragment);
  }

  document.addEventListener("input", (event) => {
    const pane = event.target.closest && event.target.closest(".extra-network-pane");
    if (pane && event.target.classList.contains("extra-network-search")) applyFilter(pane);
  });
  document.addEventListener("change", (event) => {
    const pane = event.target.closest && event.target.closest(".extra-network-pane");
    if (pane && event.target.classList.contains("extra-network-sort")) applySort(pane);
  });
  document.addEventListener("click", (event) => {
    const target = event.target;
    if (!target.closest) return;
    if (target.closest("button[role=tab]")) requestAnimationFrame(() => requestAnimationFrame(checkPanes));
    const pane = target.closest(".extra-network-pane");
    if (!pane) return;
    if (target.closest(".extra-network-sortdir")) {
      const button = target.closest(".extra-network-sortdir");
      setDirection(pane, button.dataset.sortdir === "Ascending" ? "Descending" : "Ascending");
      applySort(pane);
    } else if (target.closest(".extra-network-tree-toggle")) {
      setTree(pane, target.closest(".extra-network-tree-toggle").getAttribute("aria-pressed") !== "true");
    } else if (target.closest(".extra-network-refresh")) {
      loadPane(pane, true);
    } else if (target.closest(".extra-network-dir")) {
      const path = target.closest(".extra-network-dir").dataset.path || "";
      pane.dataset.folder = pane.dataset.folder === path ? "" : path;
      applyFilter(pane);
    }
  });

  // the cards' buttons (copy path, file metadata, edit): handled here, before the card's own click adds its text
  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest(".extra-network-cards .card .card-button");
    const pane = button && button.closest(".extra-network-pane");
    if (!pane) return;
    if (button.classList.contains("copy-path-button")) w.extraNetworksCopyPath(event);
    else if (button.classList.contains("metadata-button")) w.extraNetworksRequestMetadata(event, pane.dataset.page);
    else if (button.classList.contains("edit-button")) {
      w.extraNetworksEditUserMetadata(event, pane.dataset.tabname, pane.dataset.page);
    }
    event.stopPropagation();
  }, true);

  const start = () => {
    new MutationObserver(checkPanes).observe(document.body, {childList: true, subtree: true});
    checkPanes();
  };
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);

  // --- card buttons --------------------------------------------------------------------------------------------
  const cardOf = (event) => event.target.closest(".card");

  w.extraNetworksCopyPath = function extraNetworksCopyPath(event) {
    event.stopPropagation();
    const text = event.target.dataset.clipboardText || "";
    if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
  };

  function dialog() {
    let box = document.getElementById("extra_networks_dialog");
    if (!box) {
      box = document.createElement("dialog");
      box.id = "extra_networks_dialog";
      box.className = "extra-network-dialog";
      box.addEventListener("click", (e) => { if (e.target === box) box.close(); });
      document.body.appendChild(box);
    }
    box.replaceChildren();
    return box;
  }

  const el = (tag, props = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    for (const child of children) node.append(child);
    return node;
  };

  w.extraNetworksRequestMetadata = async function extraNetworksRequestMetadata(event, page) {
    event.stopPropagation();
    const card = cardOf(event);
    const response = await fetch(route("metadata", {page, item: card.dataset.name}), {credentials: "same-origin"});
    const data = await response.json();
    const box = dialog();
    box.append(el("h2", {textContent: card.dataset.name}),
               el("pre", {className: "extra-network-file-metadata", textContent: data.metadata || "(none)"}),
               el("button", {textContent: "Close", className: "extra-network-close", onclick: () => box.close()}));
    box.showModal();
  };

  function fieldInput(field) {
    let input;
    if (field.kind === "choice") {
      input = el("select");
      for (const choice of field.choices) input.append(el("option", {value: choice, textContent: choice}));
      input.value = field.value;
    } else if (field.kind === "weight") {
      input = el("input", {type: "number", min: "0", max: "2", step: "0.01", value: field.value});
    } else {
      const rows = field.key === "description" || field.key === "notes" ? 3 : 2;
      input = el("textarea", {rows, value: field.value || ""});
    }
    input.dataset.key = field.key;
    input.name = field.key;
    return el("label", {className: "extra-network-field"}, el("span", {textContent: field.label}), input);
  }

  w.extraNetworksEditUserMetadata = async function extraNetworksEditUserMetadata(event, tabname, page) {
    event.stopPropagation();
    const card = cardOf(event);
    const name = card.dataset.name;
    const response = await fetch(route("user-metadata", {page, item: name}), {credentials: "same-origin"});
    const box = dialog();
    if (!response.ok) {
      box.append(el("div", {className: "sd-error", textContent: await response.text()}));
      box.showModal();
      return;
    }
    const data = await response.json();
    const status = el("div", {className: "extra-network-status"});
    const form = el("form", {method: "dialog", className: "extra-network-editor"});
    form.append(el("h2", {textContent: name}),
                el("div", {className: "extra-network-filename", textContent: data.filename}));
    for (const field of data.fields) form.append(fieldInput(field));
    if (data.file_metadata) {
      form.append(el("details", {}, el("summary", {textContent: "File metadata"}),
                     el("pre", {className: "extra-network-file-metadata", textContent: data.file_metadata})));
    }
    const save = el("button", {type: "button", textContent: "Save", className: "extra-network-save"});
    const cancel = el("button", {type: "button", textContent: "Cancel", className: "extra-network-close",
                                 onclick: () => box.close()});
    form.append(status, el("div", {className: "extra-network-editor-buttons"}, save, cancel));
    save.addEventListener("click", async () => {
      const values = {};
      for (const input of form.querySelectorAll("[data-key]")) values[input.dataset.key] = input.value;
      const r = await fetch("./sd_extra_networks/user-metadata", {
        method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({page, item: name, tabname, values})});
      const text = await r.text();
      if (!r.ok) {
        let message = text;
        try { message = JSON.parse(text).detail || text; } catch (_e) { /* not JSON */ }
        status.className = "extra-network-status sd-error";
        status.textContent = message;
        return;
      }
      const fresh = el("div");
      fresh.innerHTML = JSON.parse(text).html;
      const newCard = fresh.firstElementChild;
      if (newCard && card.isConnected) {
        newCard.hidden = card.hidden;
        card.replaceWith(newCard);
      }
      box.close();
    });
    box.append(form);
    box.showModal();
  };

  w.sdExtraNetworks = {loadPane, applyFilter, applySort, checkPanes};
})();
