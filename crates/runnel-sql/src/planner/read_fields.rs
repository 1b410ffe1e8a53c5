//! Which fields of its tables' struct columns a plan reads, so that a format decodes
//! only those (Flink's nested projection push-down). Nexmark's published table holds
//! one event per record with `person`, `auction` and `bid` rows of 6–10 fields each;
//! q5 reads `bid.auction` and the three `dateTime` fields, and everything else it
//! would decode (the long `url` and `extra` strings first) is thrown away.
//!
//! The plan is walked from its sources up, following each struct column of a table
//! while it is passed on unchanged (by filters, and by projections that keep it as it
//! is). Every reading of it is one of:
//! - `get_field(column, 'name', ...)`: the field `name` is read;
//! - anything else (the column as a whole, given to a function, an operator other than
//!   a filter or projection, the sink): every field is read.
//!
//! The table's own computed columns and watermark count too. A column no reading
//! reaches is not read at all. The result is the same for every scan of a table in
//! the plan (the union over them), so scans that read one table once still share one
//! reader. A lookup join's table side is read whole, as it always was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Fields};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::Expr;

use crate::catalog::TableDef;
use crate::plan::StreamNode;

/// What a plan reads of one struct column.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FieldsRead {
    All,
    Some(BTreeSet<String>),
}

/// Per table name, per struct column: what the plan reads. A struct column of an
/// analysed table that has no entry is not read.
#[derive(Debug, Default)]
struct Reads {
    tables: HashMap<String, HashMap<String, FieldsRead>>,
}

impl Reads {
    fn table(&mut self, table: &str) -> &mut HashMap<String, FieldsRead> {
        self.tables.entry(table.to_string()).or_default()
    }

    fn all(&mut self, column: &Tracked) {
        self.table(&column.table)
            .insert(column.column.clone(), FieldsRead::All);
    }

    fn field(&mut self, column: &Tracked, field: &str) {
        let entry = self
            .table(&column.table)
            .entry(column.column.clone())
            .or_insert_with(|| FieldsRead::Some(BTreeSet::new()));
        if let FieldsRead::Some(fields) = entry {
            fields.insert(field.to_string());
        }
    }
}

/// A column of a node's output that is a table's struct column, passed on unchanged.
#[derive(Debug, Clone)]
struct Tracked {
    table: String,
    column: String,
}

/// For each column of a node's output: the struct column it is, if it is one.
type Lineage = Vec<Option<Tracked>>;

/// Sets [`TableDef::read_fields`] on every source the plan reads as a stream whose
/// table has struct columns the plan reads in part or not at all.
pub(crate) fn push_down_field_reads(root: &mut StreamNode) {
    let mut reads = Reads::default();
    let lineage = analyse(root, &mut reads);
    // What reaches the sink (or the query's output) is read whole.
    for column in lineage.iter().flatten() {
        reads.all(column);
    }
    apply(root, &reads);
}

/// The struct columns of `table`'s physical schema that may be left out: nullable ones,
/// not a key nor filled from metadata.
fn prunable_structs(table: &TableDef) -> impl Iterator<Item = (&String, &Fields)> {
    table
        .physical_schema
        .fields()
        .iter()
        .filter(|field| field.is_nullable())
        .filter(|field| table.metadata_of(field.name()).is_none())
        .filter(|field| !table.primary_key.contains(field.name()))
        .filter(|field| !table.partition_keys.contains(field.name()))
        .filter_map(|field| match field.data_type() {
            DataType::Struct(fields) => Some((field.name(), fields)),
            _ => None,
        })
}

/// Walks `node`'s subtree, recording in `reads` what is read of every tracked column,
/// and returns the lineage of `node`'s output.
fn analyse(node: &StreamNode, reads: &mut Reads) -> Lineage {
    match node {
        StreamNode::Source(source) => {
            let table = &source.table;
            let structs: BTreeMap<&String, &Fields> = prunable_structs(table).collect();
            reads.table(&table.name);
            let name_of = |column: &str| Tracked {
                table: table.name.clone(),
                column: column.to_string(),
            };
            // Computed columns and the watermark read the physical columns by name.
            let table_exprs = table
                .row_exprs
                .iter()
                .filter(|expr| !matches!(expr, Expr::Column(_)))
                .chain(table.watermark.iter().map(|w| &w.expr));
            for expr in table_exprs {
                record_by_name(expr, &structs, &name_of, reads);
            }
            // A struct column the table's schema cannot prune (a key, metadata) is
            // simply not tracked: it is always decoded.
            (0..source.schema.fields().len())
                .map(|i| {
                    let at = source.projection.as_ref().map_or(i, |p| p[i]);
                    match table.row_exprs.get(at) {
                        Some(Expr::Column(column)) if structs.contains_key(&column.name) => {
                            Some(name_of(&column.name))
                        }
                        _ => None,
                    }
                })
                .collect()
        }
        StreamNode::Filter {
            input,
            predicate,
            input_schema,
        } => {
            let lineage = analyse(input, reads);
            record(predicate, input_schema, &lineage, reads);
            lineage
        }
        StreamNode::Projection {
            input,
            exprs,
            input_schema,
            ..
        } => {
            let lineage = analyse(input, reads);
            exprs
                .iter()
                .map(|expr| {
                    if let Expr::Column(column) = strip_alias(expr) {
                        if let Some(tracked) = resolve(column, input_schema, &lineage) {
                            return tracked.clone();
                        }
                    }
                    record(expr, input_schema, &lineage, reads);
                    None
                })
                .collect()
        }
        other => {
            // Any other operator may read, keep or emit a struct column whole.
            for input in other.inputs() {
                for column in analyse(input, reads).iter().flatten() {
                    reads.all(column);
                }
            }
            vec![None; other.schema().fields().len()]
        }
    }
}

fn strip_alias(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(alias) => strip_alias(&alias.expr),
        other => other,
    }
}

/// The tracked column `column` refers to: `Some(None)` when it resolves to a column that
/// is not tracked; `None` when it does not resolve.
fn resolve<'a>(
    column: &Column,
    schema: &DFSchema,
    lineage: &'a Lineage,
) -> Option<&'a Option<Tracked>> {
    let index = schema.index_of_column(column).ok()?;
    lineage.get(index)
}

/// The field name of `get_field(base, 'name', ...)`, with its base.
fn field_read(expr: &Expr) -> Option<(&Expr, &str)> {
    let Expr::ScalarFunction(call) = expr else {
        return None;
    };
    if call.func.name() != "get_field" {
        return None;
    }
    match call.args.as_slice() {
        [base, Expr::Literal(
            ScalarValue::Utf8(Some(name))
            | ScalarValue::LargeUtf8(Some(name))
            | ScalarValue::Utf8View(Some(name)),
            _,
        ), ..] => Some((base, name.as_str())),
        _ => None,
    }
}

/// Records what `expr` (over `schema`, whose columns have `lineage`) reads of tracked
/// columns. A column that does not resolve counts every tracked column of its name as
/// read whole.
fn record(expr: &Expr, schema: &DFSchema, lineage: &Lineage, reads: &mut Reads) {
    record_with(expr, reads, |column| {
        match resolve(column, schema, lineage) {
            Some(tracked) => (tracked.iter().cloned().collect(), true),
            None => {
                let named = lineage.iter().flatten();
                (
                    named.filter(|t| t.column == column.name).cloned().collect(),
                    false,
                )
            }
        }
    });
}

/// Records what `expr`, over a table's columns by name, reads of its struct columns.
fn record_by_name(
    expr: &Expr,
    structs: &BTreeMap<&String, &Fields>,
    name_of: &impl Fn(&str) -> Tracked,
    reads: &mut Reads,
) {
    record_with(expr, reads, |column| {
        let tracked = structs
            .contains_key(&column.name)
            .then(|| name_of(&column.name));
        (tracked.into_iter().collect(), true)
    });
}

/// Walks `expr`: `get_field(column, 'name')` reads field `name` of the tracked columns
/// `targets(column)` names (all of each when it says they are not exact); any other
/// mention of a column reads its tracked columns whole.
fn record_with(expr: &Expr, reads: &mut Reads, targets: impl Fn(&Column) -> (Vec<Tracked>, bool)) {
    let _ = expr.apply(|e| {
        if let Some((Expr::Column(column), field)) = field_read(e) {
            let (tracked, exact) = targets(column);
            for t in &tracked {
                if exact {
                    reads.field(t, field);
                } else {
                    reads.all(t);
                }
            }
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Expr::Column(column) = e {
            targets(column).0.iter().for_each(|t| reads.all(t));
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

/// Sets each streamed source's `read_fields` from `reads` (a lookup join's table side,
/// which `inputs_mut` leaves out, keeps reading everything).
fn apply(node: &mut StreamNode, reads: &Reads) {
    if let StreamNode::Source(source) = node {
        let Some(table_reads) = reads.tables.get(&source.table.name) else {
            return;
        };
        let read_fields: BTreeMap<String, Vec<String>> = prunable_structs(&source.table)
            .filter_map(|(column, fields)| {
                let read: Vec<String> = match table_reads.get(column) {
                    Some(FieldsRead::All) => return None,
                    Some(FieldsRead::Some(read)) => fields
                        .iter()
                        // A field that cannot be NULL is always decoded.
                        .filter(|f| read.contains(f.name()) || !f.is_nullable())
                        .map(|f| f.name().clone())
                        .collect(),
                    None => fields
                        .iter()
                        .filter(|f| !f.is_nullable())
                        .map(|f| f.name().clone())
                        .collect(),
                };
                (read.len() < fields.len()).then(|| (column.clone(), read))
            })
            .collect();
        if !read_fields.is_empty() {
            Arc::make_mut(&mut source.table).read_fields = read_fields;
        }
        return;
    }
    for input in node.inputs_mut() {
        apply(input, reads);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{parse_script, Statement};
    use crate::{Catalog, StreamPlanner};

    /// Plans `query` over `ev`, a table of events with `person` and `bid` rows and an
    /// event time computed from them, and returns `read_fields` of each source.
    fn read_fields(query: &str) -> Vec<BTreeMap<String, Vec<String>>> {
        let planner = StreamPlanner::new();
        let mut catalog = Catalog::default();
        let ddl = "CREATE TABLE ev (kind INT,
                person ROW<id BIGINT, name STRING, ts TIMESTAMP(3)>,
                bid ROW<auction BIGINT, price BIGINT, url STRING, ts TIMESTAMP(3)>,
                ts AS CASE WHEN kind = 0 THEN person.ts ELSE bid.ts END,
                WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH ('connector' = 'filesystem', 'path' = 'e', 'format' = 'json')";
        let Statement::CreateTable(t) = parse_script(ddl).unwrap().remove(0) else {
            panic!()
        };
        catalog
            .add_table(planner.create_table(&catalog, *t).unwrap())
            .unwrap();
        let Statement::Query(q) = parse_script(query).unwrap().remove(0) else {
            panic!()
        };
        let plan = planner.plan_query(&catalog, *q, None).unwrap();
        fn visit(node: &StreamNode, out: &mut Vec<BTreeMap<String, Vec<String>>>) {
            if let StreamNode::Source(source) = node {
                out.push(source.table.read_fields.clone());
            }
            node.inputs()
                .into_iter()
                .for_each(|input| visit(input, out));
        }
        let mut out = Vec::new();
        visit(&plan.root, &mut out);
        out
    }

    fn fields(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(column, fields)| {
                let fields = fields.iter().map(|f| f.to_string()).collect();
                (column.to_string(), fields)
            })
            .collect()
    }

    #[test]
    fn the_fields_a_query_and_the_event_time_read_are_decoded() {
        assert_eq!(
            read_fields("SELECT bid.auction, bid.price FROM ev WHERE kind = 2"),
            vec![fields(&[
                ("bid", &["auction", "price", "ts"]),
                ("person", &["ts"])
            ])]
        );
    }

    #[test]
    fn a_struct_column_renamed_on_the_way_is_followed() {
        assert_eq!(
            read_fields(
                "SELECT b.price FROM (SELECT bid AS b, kind FROM ev WHERE kind = 2) WHERE b.url <> ''"
            ),
            vec![fields(&[("bid", &["price", "url", "ts"]), ("person", &["ts"])])]
        );
    }

    #[test]
    fn a_struct_column_read_whole_is_decoded_whole() {
        // Selected as it is (the sink gets it), or given whole to an expression.
        assert_eq!(
            read_fields("SELECT bid FROM ev"),
            vec![fields(&[("person", &["ts"])])]
        );
        assert_eq!(
            read_fields("SELECT bid IS NULL AS none FROM ev"),
            vec![fields(&[("person", &["ts"])])]
        );
    }

    #[test]
    fn struct_columns_reaching_an_operator_whole_are_decoded_whole() {
        // The window operator receives `person` whole: nothing is left out of it. `bid`
        // does not reach it; only the event time reads it.
        let windowed = read_fields(
            "SELECT person, window_start FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND))",
        );
        assert_eq!(windowed, vec![fields(&[("bid", &["ts"])])]);
    }

    #[test]
    fn every_scan_of_a_table_reads_the_union_of_their_fields() {
        let union = read_fields(
            "SELECT bid.price AS v FROM ev WHERE kind = 2
             UNION ALL SELECT person.id AS v FROM ev WHERE kind = 0",
        );
        let expected = fields(&[("bid", &["price", "ts"]), ("person", &["id", "ts"])]);
        assert!(!union.is_empty());
        assert!(union.iter().all(|read| *read == expected), "{union:?}");
    }
}
