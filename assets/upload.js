// Streams each chosen file to /api/upload with its own progress bar and shows the
// per-file result (stored / duplicate / conflict / rejected + reason).
(function () {
  function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }

  function row(file) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${esc(file.webkitRelativePath || file.name)}</td>
      <td style="min-width:10rem"><div class="progress"><div class="progress-bar" style="width:0%">0%</div></div></td>
      <td class="upload-status">waiting</td>`;
    return tr;
  }

  function send(file, tr) {
    return new Promise(resolve => {
      const bar = tr.querySelector(".progress-bar"), status = tr.querySelector(".upload-status");
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/upload?name=" + encodeURIComponent(file.webkitRelativePath || file.name));
      xhr.upload.onprogress = e => {
        if (e.lengthComputable) { const p = Math.round(100 * e.loaded / e.total); bar.style.width = p + "%"; bar.textContent = p + "%"; }
      };
      xhr.onload = () => {
        bar.style.width = "100%"; bar.textContent = "100%";
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = {error: xhr.statusText}; }
        if (body.results) {
          status.innerHTML = body.results.map(r =>
            `<span class="upload-${r.status}">${esc(r.status)}</span>${r.reason ? ": " + esc(r.reason) : ""}` +
            (body.results.length > 1 ? ` <small class="text-muted">${esc(r.name)}</small>` : "")).join("<br>");
        } else {
          status.innerHTML = `<span class="upload-rejected">error</span>: ${esc(body.error || xhr.status)}`;
        }
        bar.classList.add(xhr.status < 300 ? "bg-success" : "bg-danger");
        resolve();
      };
      xhr.onerror = () => { status.textContent = "network error"; bar.classList.add("bg-danger"); resolve(); };
      status.textContent = "uploading";
      xhr.send(file);
    });
  }

  async function upload(files, results) {
    const table = document.createElement("table");
    table.className = "table table-sm upload-table";
    table.innerHTML = "<thead><tr><th>File</th><th>Progress</th><th>Result</th></tr></thead>";
    const body = document.createElement("tbody");
    table.appendChild(body);
    results.prepend(table);
    const rows = Array.from(files).map(f => { const tr = row(f); body.appendChild(tr); return [f, tr]; });
    for (const [f, tr] of rows) { await send(f, tr); }
  }

  function mount(widget) {
    if (widget.dataset.mounted) return;
    widget.dataset.mounted = "1";
    widget.innerHTML = `
      <label class="btn btn-primary me-2">Choose files or archives<input id="upload-files" type="file" multiple hidden></label>
      <label class="btn btn-outline-primary">Choose a folder<input id="upload-folder" type="file" webkitdirectory multiple hidden></label>`;
    const results = document.getElementById("upload-results");
    widget.querySelectorAll("input[type=file]").forEach(input =>
      input.addEventListener("change", () => { upload(input.files, results); }));
  }

  new MutationObserver(() => {
    const widget = document.getElementById("upload-widget");
    if (widget) mount(widget);
  }).observe(document.documentElement, {childList: true, subtree: true});
})();
