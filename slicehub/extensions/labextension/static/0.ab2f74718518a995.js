"use strict";(self.rspackChunk_slicehub_status=self.rspackChunk_slicehub_status||[]).push([[0],{16(e,t,n){var r=n(17),o=n.n(r),a=n(18),i=(n.n(a))()(o());i.push([e.id,`/* The Slicehub status-bar item and session panel; colours from JupyterLab's theme variables. */

.jp-slicehub-StatusItem {
  padding: 0 6px;
  cursor: pointer;
  white-space: nowrap;
  font-variant-numeric: tabular-nums;
}

.jp-slicehub-StatusItem:hover {
  background-color: var(--jp-layout-color2);
}

.jp-slicehub-StatusItem:focus-visible {
  outline: 1px solid var(--jp-brand-color1);
  outline-offset: -1px;
}

.jp-slicehub-StatusItem[data-tone='ending'] {
  color: var(--jp-warn-color0);
  font-weight: 600;
}

.jp-slicehub-StatusItem[data-tone='offline'] {
  color: var(--jp-ui-font-color2);
  font-style: italic;
}

.jp-slicehub-Panel {
  padding: 12px 16px;
  overflow: auto;
  color: var(--jp-ui-font-color1);
  background: var(--jp-layout-color1);
  font-size: var(--jp-ui-font-size1);
}

.jp-slicehub-Panel:focus {
  outline: none;
}

.jp-slicehub-Panel h2 {
  font-size: var(--jp-ui-font-size3);
  margin: 0 0 8px;
}

.jp-slicehub-Panel dl {
  display: grid;
  grid-template-columns: max-content auto;
  gap: 4px 12px;
  margin: 8px 0;
}

.jp-slicehub-Panel dt {
  font-weight: 600;
}

.jp-slicehub-Panel dd {
  margin: 0;
}

.jp-slicehub-countdown,
.jp-slicehub-money td {
  font-variant-numeric: tabular-nums;
}

.jp-slicehub-money {
  border-collapse: collapse;
  margin: 8px 0;
}

.jp-slicehub-money caption {
  text-align: left;
  font-weight: 600;
  padding-bottom: 4px;
}

.jp-slicehub-money th,
.jp-slicehub-money td {
  padding: 2px 12px 2px 0;
  text-align: right;
}

.jp-slicehub-money th[scope='row'] {
  text-align: left;
}

.jp-slicehub-extend fieldset {
  border: 1px solid var(--jp-border-color1);
  padding: 8px 12px;
  margin: 12px 0 4px;
}

.jp-slicehub-extend select {
  width: auto;
}

.jp-slicehub-refused {
  color: var(--jp-error-color1);
}

.jp-slicehub-note {
  color: var(--jp-warn-color1);
}
`,""]),n.d(t,{},{A:i})},18(e){e.exports=function(e){var t=[];return t.toString=function(){return this.map(function(t){var n="",r=void 0!==t[5];return t[4]&&(n+="@supports (".concat(t[4],") {")),t[2]&&(n+="@media ".concat(t[2]," {")),r&&(n+="@layer".concat(t[5].length>0?" ".concat(t[5]):""," {")),n+=e(t),r&&(n+="}"),t[2]&&(n+="}"),t[4]&&(n+="}"),n}).join("")},t.i=function(e,n,r,o,a){"string"==typeof e&&(e=[[null,e,void 0]]);var i={};if(r)for(var s=0;s<this.length;s++){var c=this[s][0];null!=c&&(i[c]=!0)}for(var u=0;u<e.length;u++){var l=[].concat(e[u]);r&&i[l[0]]||(void 0!==a&&(void 0===l[5]||(l[1]="@layer".concat(l[5].length>0?" ".concat(l[5]):""," {").concat(l[1],"}")),l[5]=a),n&&(l[2]&&(l[1]="@media ".concat(l[2]," {").concat(l[1],"}")),l[2]=n),o&&(l[4]?(l[1]="@supports (".concat(l[4],") {").concat(l[1],"}"),l[4]=o):l[4]="".concat(o)),t.push(l))}},t}},17(e){e.exports=function(e){return e[1]}},10(e){var t=[];function n(e){for(var n=-1,r=0;r<t.length;r++)if(t[r].identifier===e){n=r;break}return n}function r(e,r){for(var o={},a=[],i=0;i<e.length;i++){var s=e[i],c=r.base?s[0]+r.base:s[0],u=o[c]||0,l="".concat(c," ").concat(u);o[c]=u+1;var p=n(l),d={css:s[1],media:s[2],sourceMap:s[3],supports:s[4],layer:s[5]};if(-1!==p)t[p].references++,t[p].updater(d);else{var f=function(e,t){var n=t.domAPI(t);return n.update(e),function(t){t?(t.css!==e.css||t.media!==e.media||t.sourceMap!==e.sourceMap||t.supports!==e.supports||t.layer!==e.layer)&&n.update(e=t):n.remove()}}(d,r);r.byIndex=i,t.splice(i,0,{identifier:l,updater:f,references:1})}a.push(l)}return a}e.exports=function(e,o){var a=r(e=e||[],o=o||{});return function(e){e=e||[];for(var i=0;i<a.length;i++){var s=n(a[i]);t[s].references--}for(var c=r(e,o),u=0;u<a.length;u++){var l=n(a[u]);0===t[l].references&&(t[l].updater(),t.splice(l,1))}a=c}}},12(e){var t={};e.exports=function(e,n){var r=function(e){if(void 0===t[e]){var n=document.querySelector(e);if(window.HTMLIFrameElement&&n instanceof window.HTMLIFrameElement)try{n=n.contentDocument.head}catch(e){n=null}t[e]=n}return t[e]}(e);if(!r)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");r.appendChild(n)}},14(e){e.exports=function(e){var t=document.createElement("style");return e.setAttributes(t,e.attributes),e.insert(t,e.options),t}},13(e,t,n){e.exports=function(e){var t=n.nc;t&&e.setAttribute("nonce",t)}},11(e){e.exports=function(e){if("u"<typeof document)return{update:function(){},remove:function(){}};var t=e.insertStyleElement(e);return{update:function(n){var r,o,a;r="",n.supports&&(r+="@supports (".concat(n.supports,") {")),n.media&&(r+="@media ".concat(n.media," {")),(o=void 0!==n.layer)&&(r+="@layer".concat(n.layer.length>0?" ".concat(n.layer):""," {")),r+=n.css,o&&(r+="}"),n.media&&(r+="}"),n.supports&&(r+="}"),(a=n.sourceMap)&&"u">typeof btoa&&(r+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(a))))," */")),e.styleTagTransform(r,t,e.options)},remove:function(){var e;null===(e=t).parentNode||e.parentNode.removeChild(e)}}}},15(e){e.exports=function(e,t){if(t.styleSheet)t.styleSheet.cssText=e;else{for(;t.firstChild;)t.removeChild(t.firstChild);t.appendChild(document.createTextNode(e))}}},9(e,t,n){var r=n(10),o=n.n(r),a=n(11),i=n.n(a),s=n(12),c=n.n(s),u=n(13),l=n.n(u),p=n(14),d=n.n(p),f=n(15),h=n.n(f),m=n(16),v={};v.styleTagTransform=h(),v.setAttributes=l(),v.insert=c().bind(null,"head"),v.domAPI=i(),v.insertStyleElement=d(),o()(m.A,v),m.A&&m.A.locals&&m.A.locals}}]);