// The console's one hand-written script (no inline scripts: the Content-Security-Policy
// allows none). Pages work without it; it only makes them friendlier.
"use strict";
(function () {
  // Times: <time datetime="...Z" title="... UTC"> shown in the browser's zone.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (!isNaN(moment)) {
        el.textContent = moment.toLocaleString(undefined, {
          year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
        });
      }
    });
  }

  function announce(text) {
    var notices = document.getElementById("notices");
    if (notices) {
      notices.textContent = "";
      var p = document.createElement("p");
      p.className = "notice";
      p.textContent = text;
      notices.appendChild(p);
    }
  }

  // Copy buttons: <button data-copy="ID"> copies the text of the element with that id.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.value || source.textContent.trim()).then(
      function () { announce("Copied."); },
      function () { announce("Copy failed: select the text and copy it yourself."); }
    );
  });

  // Sample leaves: clicking an element with data-path inserts that JMESPath into the
  // expression field that last had focus (input or textarea marked data-expression).
  var lastField = null;
  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("[data-expression]")) {
      lastField = event.target;
    }
  });
  document.addEventListener("click", function (event) {
    var leaf = event.target.closest("[data-path]");
    if (!leaf || !lastField) return;
    event.preventDefault();
    var path = leaf.getAttribute("data-path");
    var start = lastField.selectionStart == null ? lastField.value.length : lastField.selectionStart;
    var end = lastField.selectionEnd == null ? start : lastField.selectionEnd;
    lastField.value = lastField.value.slice(0, start) + path + lastField.value.slice(end);
    lastField.focus();
    lastField.setSelectionRange(start + path.length, start + path.length);
    lastField.dispatchEvent(new Event("input", { bubbles: true }));
    lastField.dispatchEvent(new Event("change", { bubbles: true }));
  });

  document.addEventListener("DOMContentLoaded", function () { localTimes(document); });
  document.addEventListener("htmx:afterSwap", function (event) { localTimes(event.target); });
})();
