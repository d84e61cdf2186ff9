"""The study report as one self-contained HTML page (figures embedded as `data:` URIs), so it
renders anywhere, MLflow's artifact view included."""

from __future__ import annotations

import html
import re

import markdown

_HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""

_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")

# Under the title of report.md only (`markdown_to_html` drops it). MLflow's artifact view renders
# Markdown but not its images (a relative link resolves against the UI's own address, a `data:`
# URI is stripped), while it shows report.html, whose figures are embedded, whole.
FIGURES_NOTE = (
    "*Figures: open `report.html` in this folder, this report with its figures embedded. "
    "MLflow's artifact view shows it whole, but cannot load this Markdown file's images.*"
)


def image_links(markdown_text: str) -> list[str]:
    """The relative image paths the report shows, in order, each once."""
    return list(dict.fromkeys(_IMAGE_LINK.findall(markdown_text)))


def markdown_to_html(markdown_text: str, title: str, images: dict[str, str] | None = None) -> str:
    """The report as one standalone HTML page. `images` maps an image path of the Markdown to
    what the page should load instead (a `data:` URI embeds it, so the page renders anywhere,
    MLflow's artifact view included); other paths are left as written. The Markdown's
    FIGURES_NOTE, which points to this page, is left out."""
    markdown_text = "\n".join(
        line for line in markdown_text.split("\n") if line.strip() != FIGURES_NOTE
    )
    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    for path, source in (images or {}).items():
        body = body.replace(f'src="{html.escape(path)}"', f'src="{source}"')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_HTML_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
