// The review player's keys: p (previous cell), n (next cell), v (next privileged
// cell), a (next alert). The links work without this file; it only adds the keys.
// Served as a file so that the pages' Content-Security-Policy forbids inline script.
"use strict";
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
  const ids = { p: "previous", n: "next", v: "privileged", a: "alert" };
  const id = ids[event.key];
  if (!id) return;
  const link = document.getElementById(`nbguard-player-${id}`);
  if (link && link.tagName === "A") {
    event.preventDefault();
    link.click();
  }
});
