/* mercury web interface: the little behaviour htmx does not cover. No inline scripts: the
   Content-Security-Policy allows only files served by mercury. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : null;
  }

  // Every htmx request carries the session's CSRF token.
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) {
      event.detail.headers["X-CSRF-Token"] = token;
    }
  });

  // Toasts: close on click, fade out after a while.
  function arm(toast) {
    if (toast.dataset.armed) {
      return;
    }
    toast.dataset.armed = "1";
    var close = toast.querySelector(".close");
    var remove = function () {
      toast.classList.add("leaving");
      window.setTimeout(function () { toast.remove(); }, 400);
    };
    if (close) {
      close.addEventListener("click", remove);
    }
    window.setTimeout(remove, toast.classList.contains("error") ? 12000 : 6000);
  }
  function armToasts() {
    document.querySelectorAll("#toasts .toast").forEach(arm);
  }

  // Rules: drag to reorder (HTML5 drag and drop), then post the new order.
  function setupRuleList(list) {
    if (list.dataset.ready) {
      return;
    }
    list.dataset.ready = "1";
    var dragged = null;
    function clearMarks() {
      list.querySelectorAll(".drop-above, .drop-below").forEach(function (item) {
        item.classList.remove("drop-above", "drop-below");
      });
    }
    list.addEventListener("dragstart", function (event) {
      var item = event.target.closest(".rule-item");
      if (!item) {
        return;
      }
      dragged = item;
      item.classList.add("dragging");
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", item.dataset.name);
    });
    list.addEventListener("dragend", function () {
      if (dragged) {
        dragged.classList.remove("dragging");
      }
      dragged = null;
      clearMarks();
    });
    list.addEventListener("dragover", function (event) {
      var item = event.target.closest(".rule-item");
      if (!dragged || !item || item === dragged) {
        return;
      }
      event.preventDefault();
      event.dataTransfer.dropEffect = "move";
      var box = item.getBoundingClientRect();
      var after = event.clientY > box.top + box.height / 2;
      clearMarks();
      item.classList.add(after ? "drop-below" : "drop-above");
    });
    list.addEventListener("drop", function (event) {
      var item = event.target.closest(".rule-item");
      if (!dragged || !item || item === dragged) {
        return;
      }
      event.preventDefault();
      var box = item.getBoundingClientRect();
      var after = event.clientY > box.top + box.height / 2;
      item.parentNode.insertBefore(dragged, after ? item.nextSibling : item);
      clearMarks();
      saveOrder(list);
    });
  }
  function saveOrder(list) {
    var names = Array.prototype.map.call(list.querySelectorAll(".rule-item"), function (item) {
      return item.dataset.name;
    });
    htmx.ajax("POST", list.dataset.orderUrl, {
      values: { order: names.join(",") },
      target: "#toasts",
      swap: "beforeend"
    });
  }

  // Rule tester: drop a DICOM file onto the zone to test it.
  function setupDropzone(zone) {
    if (zone.dataset.ready) {
      return;
    }
    zone.dataset.ready = "1";
    var input = zone.querySelector('input[type="file"]');
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("over");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () {
        zone.classList.remove("over");
      });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (!input || !event.dataTransfer.files.length) {
        return;
      }
      input.files = event.dataTransfer.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    });
  }

  // Target editor: show only the keys of the chosen type.
  function setupTypeSwitch(select) {
    if (select.dataset.ready) {
      return;
    }
    select.dataset.ready = "1";
    var form = select.closest("form");
    var editable = !select.disabled;
    function apply() {
      form.querySelectorAll("[data-types]").forEach(function (field) {
        var types = field.dataset.types.split(" ");
        var shown = types.indexOf(select.value) !== -1;
        field.classList.toggle("hidden", !shown);
        field.querySelectorAll("input, select, textarea").forEach(function (control) {
          control.disabled = !shown || !editable;
        });
      });
    }
    select.addEventListener("change", apply);
    apply();
  }

  function setup(root) {
    armToasts();
    (root || document).querySelectorAll("[data-rule-list]").forEach(setupRuleList);
    (root || document).querySelectorAll("[data-dropzone]").forEach(setupDropzone);
    (root || document).querySelectorAll("[data-type-switch]").forEach(setupTypeSwitch);
  }

  document.addEventListener("DOMContentLoaded", function () { setup(document); });
  document.addEventListener("htmx:load", function (event) { setup(event.target); });
  document.addEventListener("htmx:afterSwap", armToasts);
})();
