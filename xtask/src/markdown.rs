//! Markdown to roff, for the one man page whose source is a document:
//! appvisor.toml(5) is `docs/configuration.md`, so the page and the
//! contract cannot disagree.
//!
//! Covers the Markdown that document uses, and refuses the rest rather than
//! dropping it: headings (`#` is the DESCRIPTION, `##` a section, `###` a
//! subsection), paragraphs, lists, code blocks, tables (each row a tagged
//! paragraph: the first cell is the tag, the middle cells are labelled with
//! their header, the last is the text), inline code and emphasis. Links keep
//! their text; their targets are files of the repository, which a man page
//! cannot follow.

use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// Markdown the renderer does not handle, so the page would lose it.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not supported in a man page source (at byte {offset})")]
pub struct Unsupported {
    what: String,
    offset: usize,
}

#[derive(Debug, Default)]
struct Table {
    header: Vec<Vec<Inline>>,
    rows: Vec<Vec<Vec<Inline>>>,
    in_head: bool,
}

/// Renders `markdown` as the body of a man page: everything after `.TH`
/// and NAME.
pub fn to_roff(markdown: &str, roff: &mut Roff) -> Result<(), Unsupported> {
    let mut inlines: Vec<Inline> = Vec::new();
    let mut bold_depth = 0usize;
    let mut italic_depth = 0usize;
    let mut list_depth = 0usize;
    let mut table: Option<Table> = None;
    let mut row: Vec<Vec<Inline>> = Vec::new();
    let mut in_code_block = false;

    let parser = Parser::new_ext(markdown, Options::ENABLE_TABLES).into_offset_iter();
    for (event, range) in parser {
        let unsupported = |what: &str| Unsupported {
            what: what.to_owned(),
            offset: range.start,
        };
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                if level > HeadingLevel::H3 {
                    return Err(unsupported("a heading below ###"));
                }
                inlines.clear();
            }
            Event::End(TagEnd::Heading(level)) => {
                let title = plain(&inlines);
                inlines.clear();
                match level {
                    HeadingLevel::H1 => roff.control("SH", ["DESCRIPTION"]),
                    HeadingLevel::H2 => roff.control("SH", [title.to_uppercase().as_str()]),
                    _ => roff.control("SS", [title.as_str()]),
                };
            }
            Event::Start(Tag::Paragraph) => inlines.clear(),
            Event::End(TagEnd::Paragraph) => {
                if list_depth == 0 {
                    roff.control("PP", []);
                }
                roff.text(std::mem::take(&mut inlines));
            }
            Event::Start(Tag::List(_)) => {
                if list_depth > 0 {
                    return Err(unsupported("a nested list"));
                }
                list_depth += 1;
            }
            Event::End(TagEnd::List(_)) => {
                list_depth -= 1;
                roff.control("PP", []);
            }
            Event::Start(Tag::Item) => {
                inlines.clear();
                roff.control("IP", ["\\(bu", "2"]);
            }
            Event::End(TagEnd::Item) => {
                // A tight list's items hold text without a paragraph.
                if !inlines.is_empty() {
                    roff.text(std::mem::take(&mut inlines));
                }
            }
            Event::Start(Tag::CodeBlock(_)) => {
                in_code_block = true;
                inlines.clear();
            }
            Event::End(TagEnd::CodeBlock) => {
                in_code_block = false;
                roff.control("PP", []);
                roff.control("RS", ["4"]);
                roff.control("nf", []);
                let code = plain(&inlines);
                for line in code.trim_end_matches('\n').lines() {
                    roff.text([roman(line)]);
                }
                roff.control("fi", []);
                roff.control("RE", []);
                inlines.clear();
            }
            Event::Start(Tag::Table(_)) => table = Some(Table::default()),
            Event::Start(Tag::TableHead) => {
                if let Some(table) = table.as_mut() {
                    table.in_head = true;
                }
            }
            Event::End(TagEnd::TableHead) => {
                if let Some(table) = table.as_mut() {
                    table.in_head = false;
                    table.header = std::mem::take(&mut row);
                }
            }
            Event::Start(Tag::TableRow) => row.clear(),
            Event::End(TagEnd::TableRow) => {
                if let Some(table) = table.as_mut() {
                    table.rows.push(std::mem::take(&mut row));
                }
            }
            Event::Start(Tag::TableCell) => inlines.clear(),
            Event::End(TagEnd::TableCell) => row.push(std::mem::take(&mut inlines)),
            Event::End(TagEnd::Table) => {
                if let Some(table) = table.take() {
                    render_table(roff, table);
                }
            }
            Event::Start(Tag::Strong) => bold_depth += 1,
            Event::End(TagEnd::Strong) => bold_depth -= 1,
            Event::Start(Tag::Emphasis) => italic_depth += 1,
            Event::End(TagEnd::Emphasis) => italic_depth -= 1,
            // The link's text is kept; its target (a file of the
            // repository, or a web page) is not something to type.
            Event::Start(Tag::Link { .. }) | Event::End(TagEnd::Link) => {}
            Event::Text(text) => {
                let text = text.into_string();
                inlines.push(if in_code_block {
                    roman(text)
                } else if bold_depth > 0 {
                    bold(text)
                } else if italic_depth > 0 {
                    italic(text)
                } else {
                    roman(text)
                });
            }
            Event::Code(code) => inlines.push(bold(code.into_string())),
            Event::SoftBreak => inlines.push(roman(" ")),
            Event::HardBreak => inlines.push(clap_mangen::roff::line_break()),
            Event::Html(_) | Event::InlineHtml(_) => return Err(unsupported("HTML")),
            Event::Start(Tag::BlockQuote(_)) => return Err(unsupported("a block quote")),
            Event::Start(Tag::Image { .. }) => return Err(unsupported("an image")),
            Event::Start(Tag::FootnoteDefinition(_)) | Event::FootnoteReference(_) => {
                return Err(unsupported("a footnote"))
            }
            Event::Rule => {
                roff.control("PP", []);
            }
            other => return Err(unsupported(&format!("{other:?}"))),
        }
    }
    Ok(())
}

/// A table row becomes a tagged paragraph: the first cell is the tag, the
/// middle cells follow labelled with their column's header, the last cell
/// is the text.
fn render_table(roff: &mut Roff, table: Table) {
    let labels: Vec<String> = table.header.iter().map(|cell| plain(cell)).collect();
    for row in table.rows {
        let count = row.len();
        let mut cells = row.into_iter();
        roff.control("TP", []);
        roff.text(cells.next().unwrap_or_default());
        let mut body: Vec<Inline> = Vec::new();
        for (i, cell) in cells.enumerate() {
            let column = i + 1;
            if cell.is_empty() {
                continue;
            }
            if column + 1 < count {
                let label = labels.get(column).map(String::as_str).unwrap_or("");
                body.push(italic(format!("{label}:")));
                body.push(roman(" "));
                body.extend(cell);
                body.push(clap_mangen::roff::line_break());
            } else {
                body.extend(cell);
            }
        }
        roff.text(body);
    }
}

/// The text of `inlines`, without fonts.
fn plain(inlines: &[Inline]) -> String {
    inlines
        .iter()
        .map(|inline| match inline {
            Inline::Roman(text) | Inline::Italic(text) | Inline::Bold(text) => text.as_str(),
            Inline::LineBreak => "\n",
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(markdown: &str) -> String {
        let mut roff = Roff::new();
        to_roff(markdown, &mut roff).unwrap();
        roff.to_roff()
    }

    #[test]
    fn each_construct_becomes_its_man_macro() {
        let cases: &[(&str, &str)] = &[
            ("# Title\n\nIntro.\n", ".SH DESCRIPTION\n.PP\nIntro.\n"),
            ("## Daemon settings\n", ".SH \"DAEMON SETTINGS\"\n"),
            ("### `[restart]`\n", ".SS [restart]\n"),
            (
                "Use `user` and *never* **root**.\n",
                ".PP\nUse \\fBuser\\fR and \\fInever\\fR \\fBroot\\fR.\n",
            ),
            ("two\nlines\n", ".PP\ntwo lines\n"),
            (
                "- one\n- two\n",
                ".IP \\(bu 2\none\n.IP \\(bu 2\ntwo\n.PP\n",
            ),
            (
                "```toml\nuser = \"shop\"\n.dot = 1\n```\n",
                ".PP\n.RS 4\n.nf\nuser = \"shop\"\n\\&.dot = 1\n.fi\n.RE\n",
            ),
            ("see [the guide](security.md)\n", ".PP\nsee the guide\n"),
            (
                "| key | default | meaning |\n| --- | --- | --- |\n| `a.b` | `1s` | How long. |\n| `c` | | Text. |\n",
                ".TP\n\\fBa.b\\fR\n\\fIdefault:\\fR \\fB1s\\fR\n.br\nHow long.\n.TP\n\\fBc\\fR\nText.\n",
            ),
            ("a - b \\ c\n", ".PP\na \\- b \\\\ c\n"),
        ];
        for (markdown, roff) in cases {
            assert_eq!(render(markdown), *roff, "for {markdown:?}");
        }
    }

    #[test]
    fn what_a_man_page_would_lose_is_refused() {
        for markdown in [
            "<b>html</b>\n",
            "> quoted\n",
            "- a\n  - nested\n",
            "#### deep\n",
            "![img](x.png)\n",
        ] {
            let mut roff = Roff::new();
            assert!(
                to_roff(markdown, &mut roff).is_err(),
                "{markdown:?} is refused"
            );
        }
    }
}
