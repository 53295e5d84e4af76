// Live bot log: follows the server-sent events of every [data-live-logs-stream] list and
// appends each line as a list item. Without JavaScript the page still shows the newest lines
// it was rendered with and a refresh link. The status texts come from data attributes, so the
// page's language is the server's choice.
(function () {
  "use strict";

  function follow(list) {
    var status = document.getElementById(list.getAttribute("data-live-logs-status"));
    var empty = document.getElementById(list.getAttribute("data-live-logs-empty"));
    var keep = parseInt(list.getAttribute("data-live-logs-keep"), 10) || 1000;
    var box = list.closest("[role=log]") || list;
    box.scrollTop = box.scrollHeight; // the newest lines are at the bottom

    function say(name) {
      if (status) {
        status.textContent = list.getAttribute("data-text-" + name) || "";
      }
    }

    var source = new EventSource(list.getAttribute("data-live-logs-stream"));
    source.onopen = function () {
      say("live");
    };
    source.onmessage = function (event) {
      // Follow the bottom unless the reader scrolled up to read older lines.
      var following = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
      var item = document.createElement("li");
      item.textContent = event.data;
      list.appendChild(item);
      while (list.children.length > keep) {
        list.removeChild(list.firstElementChild);
      }
      if (empty) {
        empty.hidden = true;
      }
      if (following) {
        box.scrollTop = box.scrollHeight;
      }
    };
    source.addEventListener("end", function () {
      source.close();
      say("ended");
    });
    source.onerror = function () {
      // A stream over its time, a refusal or a lost connection: stop rather than reconnect
      // and repeat lines; the refresh link starts again where the page is.
      source.close();
      say("lost");
    };
  }

  var lists = document.querySelectorAll("[data-live-logs-stream]");
  for (var i = 0; i < lists.length; i += 1) {
    follow(lists[i]);
  }
})();
