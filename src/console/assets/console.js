// gapsync console: optional enhancements; every page works without them.
// Loaded from the server itself (the Content-Security-Policy forbids inline script).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // A "select all" checkbox in the header of a list of checkboxes.
  document.querySelectorAll("table.updates thead th:first-child").forEach(function (th) {
    var box = document.createElement("input");
    box.type = "checkbox";
    box.setAttribute("aria-label", "Select all on this page");
    box.addEventListener("change", function () {
      th.closest("table").querySelectorAll("tbody input[type=checkbox]").forEach(function (b) {
        b.checked = box.checked;
      });
    });
    th.appendChild(box);
  });
  // Declining removes every approval of the update: ask first.
  document.querySelectorAll("button[name=op][value=decline]").forEach(function (b) {
    b.addEventListener("click", function (e) {
      if (!window.confirm("Decline the selected updates? Their approvals are removed.")) {
        e.preventDefault();
      }
    });
  });
});
