//! A pure model of nftables rule sets: tables, chains with their rules, sets and maps with their
//! elements; rendered as `nft -f` input, and diffed into one transaction that writes only what
//! changed (element adds and deletes, flushed and re-added chains), in an order the kernel
//! accepts. Rules are text: the planners that make them know their meaning; this crate knows
//! only their structure. No I/O.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

pub mod netlink;

/// An nftables family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `ip`
    Ip,
    /// `ip6`
    Ip6,
    /// `inet`
    Inet,
    /// `bridge`
    Bridge,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Bridge => "bridge",
        })
    }
}

/// A chain: a base chain's hook line (`type nat hook prerouting priority -100; policy accept;`)
/// or none, and its rules in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// The base chain declaration, without braces.
    pub base: Option<String>,
    /// Rules, as `nft` text.
    pub rules: Vec<String>,
}

/// A set (`value` absent on every element) or a map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set {
    /// `map` instead of `set`.
    pub is_map: bool,
    /// The declaration inside the braces: `type ipv4_addr . inet_proto . inet_service : verdict;`
    /// or `typeof ... ;`, with any `flags` and `timeout` settings.
    pub spec: String,
    /// Elements: key to value (`None` for sets).
    pub elements: BTreeMap<String, Option<String>>,
    /// Comments of elements, by key (what `nft list` shows beside them; kube-proxy names the
    /// Service port an element is for this way). A comment alone never makes a change.
    pub comments: BTreeMap<String, String>,
}

/// nft's longest comment (`NFTNL_UDATA_COMMENT_MAXLEN`).
pub const COMMENT_MAX: usize = 128;

/// `comment` cut to what nft takes, on a character boundary.
pub fn clip_comment(comment: &str) -> &str {
    let mut end = comment.len().min(COMMENT_MAX);
    while !comment.is_char_boundary(end) {
        end -= 1;
    }
    &comment[..end]
}

/// A table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets and maps by name.
    pub sets: BTreeMap<String, Set>,
}

/// A rule set: the tables one owner manages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Tables by family and name.
    pub tables: BTreeMap<(Family, String), Table>,
}

/// Elements per `add element` command: long enough to be few, short enough for nft's parser.
const ELEMENTS_PER_COMMAND: usize = 4096;

/// One element as `nft` text: `key comment "c" : value`.
pub fn element_text(key: &str, value: Option<&str>, comment: Option<&str>) -> String {
    let mut out = key.to_owned();
    if let Some(c) = comment {
        out.push_str(&format!(" comment \"{}\"", clip_comment(c)));
    }
    if let Some(v) = value {
        out.push_str(" : ");
        out.push_str(v);
    }
    out
}

impl Set {
    fn text_of(&self, key: &str, value: &Option<String>) -> String {
        element_text(key, value.as_deref(), self.comments.get(key).map(String::as_str))
    }
}

fn push_elements(out: &mut String, verb: &str, family: Family, table: &str, set: &str, items: &[String]) {
    for chunk in items.chunks(ELEMENTS_PER_COMMAND) {
        let _ = writeln!(out, "{verb} element {family} {table} {set} {{ {} }}", chunk.join(", "));
    }
}

impl Ruleset {
    /// The whole rule set as `nft -f` input: each table deleted (if there) and made anew, in one
    /// transaction. This is the full re-sync.
    pub fn full_script(&self) -> String {
        let mut out = String::new();
        for ((family, name), table) in &self.tables {
            // `add` first so that `delete` succeeds when the table is not there yet.
            let _ = writeln!(out, "add table {family} {name}");
            let _ = writeln!(out, "delete table {family} {name}");
            table_script(&mut out, *family, name, table, |_| true);
        }
        out
    }

    /// `full_script` without the elements of the sets `netlink::encodable` takes, for a fast
    /// first load: those go in afterwards as `netlink::element_batch`es, one per table.
    pub fn skeleton_script(&self) -> String {
        let mut out = String::new();
        for ((family, name), table) in &self.tables {
            let _ = writeln!(out, "add table {family} {name}");
            let _ = writeln!(out, "delete table {family} {name}");
            table_script(&mut out, *family, name, table, |set| !netlink::encodable(set));
        }
        out
    }

    /// Deletes every table of the rule set (a no-op for tables not there).
    pub fn delete_script(&self) -> String {
        let mut out = String::new();
        for (family, name) in self.tables.keys() {
            let _ = writeln!(out, "add table {family} {name}");
            let _ = writeln!(out, "delete table {family} {name}");
        }
        out
    }

    /// Number of set and map elements.
    pub fn element_count(&self) -> usize {
        self.tables.values().flat_map(|t| t.sets.values()).map(|s| s.elements.len()).sum()
    }
}

/// Creates one table with everything in it (it must not exist).
fn table_script(out: &mut String, family: Family, name: &str, table: &Table, with_elements: impl Fn(&Set) -> bool) {
    let _ = writeln!(out, "add table {family} {name}");
    for (set_name, set) in &table.sets {
        let kind = if set.is_map { "map" } else { "set" };
        let _ = writeln!(out, "add {kind} {family} {name} {set_name} {{ {} }}", set.spec);
    }
    for (chain_name, chain) in &table.chains {
        match &chain.base {
            Some(base) => {
                let _ = writeln!(out, "add chain {family} {name} {chain_name} {{ {base} }}");
            }
            None => {
                let _ = writeln!(out, "add chain {family} {name} {chain_name}");
            }
        }
    }
    for (chain_name, chain) in &table.chains {
        for rule in &chain.rules {
            let _ = writeln!(out, "add rule {family} {name} {chain_name} {rule}");
        }
    }
    // Elements after rules: binding a verdict map to its rule walks every element already in
    // it (loop detection), so filling it afterwards saves that walk (~4% of a 30k load).
    for (set_name, set) in table.sets.iter().filter(|(_, set)| with_elements(set)) {
        let items: Vec<String> = set.elements.iter().map(|(k, v)| set.text_of(k, v)).collect();
        push_elements(out, "add", family, name, set_name, &items);
    }
}

/// Why a change cannot be written as a difference (the caller then re-syncs in full).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeedsFullSync {
    /// A set's declaration or a base chain's hook changed.
    Redeclared(String),
}

/// The one transaction that turns `old` (what was applied) into `new`: element adds and
/// deletes, changed chains flushed and re-filled, objects added and removed. Returns an empty
/// string when nothing changed.
pub fn transaction(old: &Ruleset, new: &Ruleset) -> Result<String, NeedsFullSync> {
    let mut out = String::new();
    // Tables gone.
    for (family, name) in old.tables.keys().filter(|k| !new.tables.contains_key(*k)) {
        let _ = writeln!(out, "delete table {family} {name}");
    }
    for ((family, name), table) in &new.tables {
        let Some(before) = old.tables.get(&(*family, name.clone())) else {
            table_script(&mut out, *family, name, table, |_| true);
            continue;
        };
        table_diff(&mut out, *family, name, before, table)?;
    }
    Ok(out)
}

fn table_diff(out: &mut String, family: Family, name: &str, old: &Table, new: &Table) -> Result<(), NeedsFullSync> {
    for (set_name, set) in &new.sets {
        if let Some(o) = old.sets.get(set_name)
            && (o.spec != set.spec || o.is_map != set.is_map)
        {
            return Err(NeedsFullSync::Redeclared(format!("{family} {name} {set_name}")));
        }
    }
    for (chain_name, chain) in &new.chains {
        if let Some(o) = old.chains.get(chain_name)
            && o.base != chain.base
        {
            return Err(NeedsFullSync::Redeclared(format!("{family} {name} {chain_name}")));
        }
    }
    // 1. New sets and chains, empty.
    for (set_name, set) in new.sets.iter().filter(|(n, _)| !old.sets.contains_key(*n)) {
        let kind = if set.is_map { "map" } else { "set" };
        let _ = writeln!(out, "add {kind} {family} {name} {set_name} {{ {} }}", set.spec);
    }
    for (chain_name, chain) in new.chains.iter().filter(|(n, _)| !old.chains.contains_key(*n)) {
        match &chain.base {
            Some(base) => {
                let _ = writeln!(out, "add chain {family} {name} {chain_name} {{ {base} }}");
            }
            None => {
                let _ = writeln!(out, "add chain {family} {name} {chain_name}");
            }
        }
    }
    // 2. Elements that go (also those whose value changes: a map element is replaced).
    for (set_name, set) in &new.sets {
        let Some(o) = old.sets.get(set_name) else {
            continue;
        };
        let gone: Vec<String> = o.elements.iter().filter(|(k, v)| set.elements.get(*k) != Some(*v)).map(|(k, _)| k.clone()).collect();
        push_elements(out, "delete", family, name, set_name, &gone);
    }
    // 3. Chains whose rules changed: flushed and re-filled; new chains filled.
    for (chain_name, chain) in &new.chains {
        let changed = old.chains.get(chain_name).is_none_or(|o| o.rules != chain.rules);
        if !changed {
            continue;
        }
        if old.chains.contains_key(chain_name) {
            let _ = writeln!(out, "flush chain {family} {name} {chain_name}");
        }
        for rule in &chain.rules {
            let _ = writeln!(out, "add rule {family} {name} {chain_name} {rule}");
        }
    }
    // 4. Elements that come (new sets' elements too).
    for (set_name, set) in &new.sets {
        let before = old.sets.get(set_name);
        let added: Vec<String> =
            set.elements.iter().filter(|(k, v)| before.is_none_or(|o| o.elements.get(*k) != Some(*v))).map(|(k, v)| set.text_of(k, v)).collect();
        push_elements(out, "add", family, name, set_name, &added);
    }
    // 5. Chains and sets that go: emptied first, then deleted.
    for chain_name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
        let _ = writeln!(out, "flush chain {family} {name} {chain_name}");
        let _ = writeln!(out, "delete chain {family} {name} {chain_name}");
    }
    for set_name in old.sets.keys().filter(|n| !new.sets.contains_key(*n)) {
        let kind = if old.sets[set_name].is_map { "map" } else { "set" };
        let _ = writeln!(out, "delete {kind} {family} {name} {set_name}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(elements: &[(&str, &str)], rules: &[&str]) -> Ruleset {
        let mut t = Table::default();
        t.chains.insert(
            "services".into(),
            Chain { base: Some("type nat hook prerouting priority -100; policy accept;".into()), rules: rules.iter().map(|r| (*r).to_owned()).collect() },
        );
        t.chains.insert("class-1".into(), Chain::default());
        t.sets.insert(
            "svc".into(),
            Set {
                is_map: true,
                spec: "type ipv4_addr . inet_proto . inet_service : verdict;".into(),
                elements: elements.iter().map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned()))).collect(),
                comments: BTreeMap::new(),
            },
        );
        let mut r = Ruleset::default();
        r.tables.insert((Family::Ip, "podnet-proxy".into()), t);
        r
    }

    #[test]
    fn full_script_replaces_the_table_in_one_transaction() {
        let r = sample(&[("10.96.0.1 . tcp . 80", "goto class-1")], &["ip daddr . meta l4proto . th dport vmap @svc"]);
        let s = r.full_script();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "add table ip podnet-proxy");
        assert_eq!(lines[1], "delete table ip podnet-proxy");
        let element = lines.iter().position(|l| l.starts_with("add element")).unwrap();
        let rule = lines.iter().position(|l| l.starts_with("add rule")).unwrap();
        let chain = lines.iter().position(|l| l.starts_with("add chain ip podnet-proxy class-1")).unwrap();
        assert!(chain < rule && rule < element, "{s}");
        assert!(s.contains("add element ip podnet-proxy svc { 10.96.0.1 . tcp . 80 : goto class-1 }"));
    }

    #[test]
    fn comments_go_with_their_elements_and_alone_change_nothing() {
        let mut r = sample(&[("10.96.0.1 . tcp . 80", "goto class-1")], &[]);
        let set = r.tables.values_mut().next().unwrap().sets.get_mut("svc").unwrap();
        set.comments.insert("10.96.0.1 . tcp . 80".into(), "shop/web:http".into());
        assert!(r.full_script().contains("svc { 10.96.0.1 . tcp . 80 comment \"shop/web:http\" : goto class-1 }"), "{}", r.full_script());
        let mut renamed = r.clone();
        renamed.tables.values_mut().next().unwrap().sets.get_mut("svc").unwrap().comments.insert("10.96.0.1 . tcp . 80".into(), "x".into());
        assert_eq!(transaction(&r, &renamed).unwrap(), "");
        assert_eq!(clip_comment(&"é".repeat(100)).len(), 128);
    }

    #[test]
    fn an_unchanged_rule_set_needs_no_transaction() {
        let r = sample(&[("a", "goto class-1")], &["r1"]);
        assert_eq!(transaction(&r, &r.clone()).unwrap(), "");
    }

    #[test]
    fn element_changes_touch_only_those_elements() {
        let old = sample(&[("a", "goto class-1"), ("b", "goto class-1"), ("c", "goto class-1")], &["r1"]);
        let new = sample(&[("a", "goto class-1"), ("b", "goto class-2"), ("d", "goto class-1")], &["r1"]);
        let t = transaction(&old, &new).unwrap();
        assert_eq!(t, "delete element ip podnet-proxy svc { b, c }\nadd element ip podnet-proxy svc { b : goto class-2, d : goto class-1 }\n");
    }

    #[test]
    fn changed_chains_are_flushed_and_refilled_and_new_objects_come_first() {
        let old = sample(&[], &["r1"]);
        let mut new = sample(&[("a", "goto class-2")], &["r1", "r2"]);
        new.tables.values_mut().next().unwrap().chains.insert("class-2".into(), Chain { base: None, rules: vec!["dnat ip to 1.2.3.4".into()] });
        let t = transaction(&old, &new).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "add chain ip podnet-proxy class-2");
        assert!(lines.contains(&"flush chain ip podnet-proxy services"));
        assert!(lines.contains(&"add rule ip podnet-proxy class-2 dnat ip to 1.2.3.4"));
        assert_eq!(*lines.last().unwrap(), "add element ip podnet-proxy svc { a : goto class-2 }");
    }

    #[test]
    fn removed_chains_go_after_the_elements_that_named_them() {
        let mut old = sample(&[("a", "goto class-2")], &["r1"]);
        old.tables.values_mut().next().unwrap().chains.insert("class-2".into(), Chain::default());
        let new = sample(&[], &["r1"]);
        let t = transaction(&old, &new).unwrap();
        assert_eq!(t, "delete element ip podnet-proxy svc { a }\nflush chain ip podnet-proxy class-2\ndelete chain ip podnet-proxy class-2\n");
    }

    #[test]
    fn a_redeclared_set_asks_for_a_full_sync() {
        let old = sample(&[], &["r1"]);
        let mut new = old.clone();
        new.tables.values_mut().next().unwrap().sets.get_mut("svc").unwrap().spec = "type ipv4_addr : verdict;".into();
        assert!(matches!(transaction(&old, &new), Err(NeedsFullSync::Redeclared(_))));
    }

    #[test]
    fn big_element_lists_are_split_into_several_commands() {
        let many: Vec<(String, String)> = (0..10_000).map(|i| (format!("k{i}"), "goto class-1".to_owned())).collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = sample(&refs, &[]);
        assert_eq!(r.full_script().lines().filter(|l| l.starts_with("add element")).count(), 3);
        assert_eq!(r.element_count(), 10_000);
    }
}
