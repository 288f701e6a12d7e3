// Study page cines: the HLS button plays the same clip through hls.js (Media Source Extensions),
// or natively where the browser plays HLS itself. Delegated: Dash renders the players after load.
document.addEventListener("click", function (event) {
    const button = event.target.closest(".cine-hls-button");
    if (!button) return;
    event.preventDefault();
    const video = document.getElementById(button.dataset.video);
    const source = button.dataset.hls;
    if (window.Hls && window.Hls.isSupported()) {
        if (video._hls) video._hls.destroy();
        video._hls = new window.Hls();
        video._hls.loadSource(source);
        video._hls.attachMedia(video);
    } else {
        video.src = source;
    }
    video.play();
});
