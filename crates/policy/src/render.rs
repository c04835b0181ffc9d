//! The matrix as text and pictures: the e2e truth table, JSON (the scripting contract),
//! Markdown, HTML and SVG.

use std::io::{self, Write};

use model::PodInfo;

use crate::matrix::Matrix;

/// Output formats of `policy matrix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Upstream e2e truth tables (`.` allowed, `X` blocked), tab-separated.
    Table,
    /// `{"pods": [...], "matrices": [{"port", "protocol", "allowed"}]}`
    Json,
    /// Markdown tables.
    Markdown,
    /// A self-contained HTML page with coloured matrices.
    Html,
    /// An SVG picture of the matrices.
    Svg,
}

/// Renders a matrix over `pods` (the snapshot's pods, in matrix order) into a writer; wrap
/// stdout in a `BufWriter`, outputs grow with pods² × ports.
pub fn render(matrix: &Matrix, pods: &[PodInfo], format: Format, w: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Table => table(matrix, pods, w),
        Format::Json => json(matrix, pods, w),
        Format::Markdown => markdown(matrix, pods, w),
        Format::Html => html(matrix, pods, w),
        Format::Svg => svg(matrix, pods, w),
    }
}

/// Renders into a string (for tests and small outputs).
pub fn render_to_string(matrix: &Matrix, pods: &[PodInfo], format: Format) -> String {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = render(matrix, pods, format, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn port_title(matrix: &Matrix, c: usize) -> String {
    let (port, protocol) = matrix.ports[c];
    format!("{port}/{protocol}")
}

/// Upstream's `TruthTable.PrettyPrint`, one per port, under a `port/PROTOCOL` title.
pub fn table(matrix: &Matrix, pods: &[PodInfo], w: &mut dyn Write) -> io::Result<()> {
    let names: Vec<String> = pods.iter().map(PodInfo::display_name).collect();
    for c in 0..matrix.ports.len() {
        if c > 0 {
            w.write_all(b"\n")?;
        }
        writeln!(w, "{}", port_title(matrix, c))?;
        writeln!(w, "-\t{}", names.join("\t"))?;
        for (i, from) in names.iter().enumerate() {
            w.write_all(from.as_bytes())?;
            for j in 0..pods.len() {
                w.write_all(if matrix.allowed(c, i, j) { "\t." } else { "\tX" }.as_bytes())?;
            }
            w.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// The JSON contract: exactly one object, `allowed[i][j]` for `pods[i] -> pods[j]`.
pub fn json(matrix: &Matrix, pods: &[PodInfo], w: &mut dyn Write) -> io::Result<()> {
    let n = pods.len();
    w.write_all("{\"pods\":[".as_bytes())?;
    for (i, p) in pods.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        w.write_all(serde_json::Value::String(p.key()).to_string().as_bytes())?;
    }
    w.write_all("],\"matrices\":[".as_bytes())?;
    for c in 0..matrix.ports.len() {
        if c > 0 {
            w.write_all(b",")?;
        }
        let (port, protocol) = matrix.ports[c];
        write!(w, "{{\"port\":{port},\"protocol\":\"{protocol}\",\"allowed\":[")?;
        // One buffer per row: a few large writes instead of n² small ones.
        let mut row = Vec::with_capacity(n * 6 + 2);
        for i in 0..n {
            row.clear();
            if i > 0 {
                row.push(b',');
            }
            row.push(b'[');
            for j in 0..n {
                if j > 0 {
                    row.push(b',');
                }
                row.extend_from_slice(if matrix.allowed(c, i, j) { b"true" } else { b"false" });
            }
            row.push(b']');
            w.write_all(&row)?;
        }
        w.write_all("]}".as_bytes())?;
    }
    w.write_all("]}\n".as_bytes())?;
    Ok(())
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Markdown tables for docs: one per port, rows are sources, columns destinations.
pub fn markdown(matrix: &Matrix, pods: &[PodInfo], w: &mut dyn Write) -> io::Result<()> {
    let names: Vec<String> = pods.iter().map(|p| md_escape(&p.display_name())).collect();
    for c in 0..matrix.ports.len() {
        if c > 0 {
            w.write_all(b"\n")?;
        }
        writeln!(w, "### {}\n", port_title(matrix, c))?;
        writeln!(w, "| from \\ to | {} |", names.join(" | "))?;
        writeln!(w, "|---|{}", ":-:|".repeat(names.len()))?;
        for (i, from) in names.iter().enumerate() {
            write!(w, "| **{from}** |")?;
            for j in 0..pods.len() {
                w.write_all(if matrix.allowed(c, i, j) { " ✅ |" } else { " ❌ |" }.as_bytes())?;
            }
            w.write_all(b"\n")?;
        }
    }
    w.write_all("\n✅ allowed · ❌ blocked (rows connect to columns)\n".as_bytes())?;
    Ok(())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Contiguous runs of pods in the same namespace: `(namespace, start, len)`.
fn namespace_groups(pods: &[PodInfo]) -> Vec<(&str, usize, usize)> {
    let mut groups: Vec<(&str, usize, usize)> = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        match groups.last_mut() {
            Some((ns, _, len)) if *ns == p.namespace => *len += 1,
            _ => groups.push((&p.namespace, i, 1)),
        }
    }
    groups
}

const ALLOWED_COLOUR: &str = "#2e9e5b";
const BLOCKED_COLOUR: &str = "#d64545";

/// A self-contained page: one coloured matrix per port, namespaces as column and row groups.
pub fn html(matrix: &Matrix, pods: &[PodInfo], w: &mut dyn Write) -> io::Result<()> {
    let groups = namespace_groups(pods);
    w.write_all("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>podnet policy matrix</title>\n<style>\n".as_bytes())?;
    writeln!(
        w,
        "body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin-bottom:2em}}\
th,td{{border:1px solid #ccc;padding:0;font-size:12px}}th{{background:#f4f4f4;padding:2px 6px;white-space:nowrap}}\
td.a{{background:{ALLOWED_COLOUR}}}td.b{{background:{BLOCKED_COLOUR}}}td{{width:18px;height:18px;text-align:center;font-family:monospace}}\
th.ns{{background:#e3e9f3}}.sep{{border-left:3px solid #555}}.legend span{{display:inline-block;width:14px;height:14px;vertical-align:middle;margin:0 4px 0 12px}}"
    )?;
    w.write_all("</style></head><body>\n<h1>Pod connectivity</h1>\n".as_bytes())?;
    writeln!(
        w,
        "<p class=\"legend\">Rows connect to columns.<span style=\"background:{ALLOWED_COLOUR}\">.</span>allowed<span style=\"background:{BLOCKED_COLOUR}\">X</span>blocked</p>"
    )?;
    let group_start: std::collections::BTreeSet<usize> = groups.iter().map(|g| g.1).collect();
    for c in 0..matrix.ports.len() {
        let title = port_title(matrix, c);
        writeln!(w, "<h2>{title}</h2>\n<table>")?;
        w.write_all("<tr><th rowspan=\"2\">from \\ to</th>".as_bytes())?;
        for (ns, _, len) in &groups {
            write!(w, "<th class=\"ns sep\" colspan=\"{len}\">{}</th>", xml_escape(ns))?;
        }
        w.write_all("</tr>\n<tr>".as_bytes())?;
        for (j, p) in pods.iter().enumerate() {
            let sep = if group_start.contains(&j) { " class=\"sep\"" } else { "" };
            let label = if p.kind == "Pod" { p.name.clone() } else { format!("{}[{}]", p.name, p.kind) };
            write!(w, "<th{sep}>{}</th>", xml_escape(&label))?;
        }
        w.write_all("</tr>\n".as_bytes())?;
        for (i, from) in pods.iter().enumerate() {
            write!(w, "<tr><th>{}</th>", xml_escape(&from.display_name()))?;
            for (j, to) in pods.iter().enumerate() {
                let ok = matrix.allowed(c, i, j);
                let class = match (ok, group_start.contains(&j)) {
                    (true, false) => "a",
                    (true, true) => "a sep",
                    (false, false) => "b",
                    (false, true) => "b sep",
                };
                // A symbol as well as a colour (the upstream e2e truth table's `.` and `X`), so
                // that the matrix reads without colour too.
                let (verdict, symbol) = if ok { ("allowed", ".") } else { ("blocked", "X") };
                write!(
                    w,
                    "<td class=\"{class}\" title=\"{} → {} on {title}: {verdict}\">{symbol}</td>",
                    xml_escape(&from.display_name()),
                    xml_escape(&to.display_name())
                )?;
            }
            w.write_all("</tr>\n".as_bytes())?;
        }
        w.write_all("</table>\n".as_bytes())?;
    }
    w.write_all("</body></html>\n".as_bytes())?;
    Ok(())
}

/// An SVG picture: one grid per port, stacked, with namespace bands.
pub fn svg(matrix: &Matrix, pods: &[PodInfo], w: &mut dyn Write) -> io::Result<()> {
    const CELL: usize = 16;
    let n = pods.len();
    let names: Vec<String> = pods.iter().map(PodInfo::display_name).collect();
    let label_w = 8 + 7 * names.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let header_h = label_w.max(40);
    let grid = n * CELL;
    let block_h = 30 + header_h + grid + 30;
    let width = label_w + grid + 20;
    let height = block_h * matrix.ports.len().max(1) + 30;
    let groups = namespace_groups(pods);
    writeln!(
        w,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">"
    )?;
    writeln!(w, "<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>")?;
    writeln!(
        w,
        "<text x=\"10\" y=\"18\" font-size=\"12\">rows connect to columns: <tspan fill=\"{ALLOWED_COLOUR}\">■ . allowed</tspan> <tspan fill=\"{BLOCKED_COLOUR}\">■ X blocked</tspan></text>"
    )?;
    for c in 0..matrix.ports.len() {
        let top = 30 + c * block_h;
        let gx = label_w;
        let gy = top + 30 + header_h;
        writeln!(w, "<text x=\"10\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>", top + 20, port_title(matrix, c))?;
        for (j, name) in names.iter().enumerate() {
            let x = gx + j * CELL + CELL / 2 + 4;
            let y = gy - 6;
            writeln!(w, "<text x=\"{x}\" y=\"{y}\" transform=\"rotate(-90 {x} {y})\">{}</text>", xml_escape(name))?;
        }
        for (i, name) in names.iter().enumerate() {
            writeln!(w, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", gx - 6, gy + i * CELL + CELL - 4, xml_escape(name))?;
            for (j, to) in names.iter().enumerate() {
                let (fill, symbol) = if matrix.allowed(c, i, j) { (ALLOWED_COLOUR, ".") } else { (BLOCKED_COLOUR, "X") };
                writeln!(
                    w,
                    "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" stroke=\"white\"><title>{} → {}</title></rect>",
                    gx + j * CELL,
                    gy + i * CELL,
                    CELL,
                    CELL,
                    xml_escape(name),
                    xml_escape(to)
                )?;
                // The symbol too, so that the matrix reads without colour.
                writeln!(
                    w,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"white\">{symbol}</text>",
                    gx + j * CELL + CELL / 2,
                    gy + i * CELL + CELL - 5
                )?;
            }
        }
        for (_, start, len) in &groups {
            writeln!(
                w,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.5\"/>",
                gx + start * CELL,
                gy + start * CELL,
                len * CELL,
                len * CELL
            )?;
        }
    }
    w.write_all("</svg>\n".as_bytes())?;
    Ok(())
}
