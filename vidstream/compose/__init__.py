"""Compose jobs: a video rendered from a JSON timeline of clips, images, text, audio and
subtitles, by one FFmpeg filter graph (`graph`), validated before it is queued (`rules`)."""
