"use strict";
// Shows the failure note after a rejected token (the server redirects with ?failed=1).
if (new URLSearchParams(window.location.search).has("failed")) {
  document.getElementById("failed").hidden = false;
}
