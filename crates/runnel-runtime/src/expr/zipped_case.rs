//! [`ZippedCase`]: a searched `CASE` whose branches only read columns, evaluated by
//! reading every branch over the whole batch and picking each row's value with Arrow's
//! `zip`. DataFusion's `CaseExpr` instead filters the batch down to each branch's rows
//! (every column the `CASE` reads, struct columns whole) so that a branch never sees a
//! row it could fail on; when no branch can fail, the filtering is pure cost.
//!
//! The published Nexmark table is the case in point: its event time is
//! `CASE WHEN event_type = 0 THEN person.dateTime WHEN event_type = 1 THEN
//! auction.dateTime ELSE bid.dateTime END`, computed for every record read.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column, IsNotNullExpr, IsNullExpr, Literal, NotExpr,
};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};

/// A searched `CASE` (no operand) whose conditions and results cannot fail on any row:
/// every result is read over the whole batch, and the first condition that holds picks
/// each row's (a NULL condition does not hold, as in `CaseExpr`). Results equal
/// `CaseExpr`'s; built only by [`zip_cases`].
#[derive(Debug, Eq)]
pub struct ZippedCase {
    /// The `CaseExpr` it evaluates: its types, children and text are this one's.
    case: Arc<dyn PhysicalExpr>,
}

impl PartialEq for ZippedCase {
    fn eq(&self, other: &Self) -> bool {
        self.case.eq(&other.case)
    }
}

impl std::hash::Hash for ZippedCase {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.case.hash(state)
    }
}

/// Replaces each searched `CASE` in `expr` that [`ZippedCase`] can evaluate by one.
pub fn zip_cases(expr: Arc<dyn PhysicalExpr>, schema: &Schema) -> DFResult<Arc<dyn PhysicalExpr>> {
    expr.transform_up(|node| {
        Ok(match ZippedCase::try_new(&node, schema)? {
            Some(zipped) => Transformed::yes(Arc::new(zipped) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

impl ZippedCase {
    /// `Some` when `expr` is a searched `CASE` whose conditions and results cannot fail
    /// and whose results have the `CASE`'s own type (so `zip` can pick among them).
    fn try_new(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> DFResult<Option<Self>> {
        let Some(case) = expr.downcast_ref::<CaseExpr>() else {
            return Ok(None);
        };
        if case.expr().is_some() {
            return Ok(None);
        }
        let data_type = case.data_type(schema)?;
        let results = case
            .when_then_expr()
            .iter()
            .map(|(_, then)| then)
            .chain(case.else_expr());
        for result in results {
            if !reads_only(result) || result.data_type(schema)? != data_type {
                return Ok(None);
            }
        }
        for (when, _) in case.when_then_expr() {
            if !cannot_fail(when, schema)? {
                return Ok(None);
            }
        }
        Ok(Some(Self { case: expr.clone() }))
    }

    /// The `CASE` evaluated.
    fn case(&self) -> DFResult<&CaseExpr> {
        self.case.downcast_ref::<CaseExpr>().ok_or_else(|| {
            DataFusionError::Internal(format!("{} is not a CASE expression", self.case))
        })
    }
}

/// Whether `expr` only reads a value: a column, a literal, or a field of a struct read so.
fn reads_only(expr: &Arc<dyn PhysicalExpr>) -> bool {
    if expr.is::<Column>() || expr.is::<Literal>() {
        return true;
    }
    expr.downcast_ref::<ScalarFunctionExpr>()
        .is_some_and(|f| f.name() == "get_field" && f.args().iter().all(reads_only))
}

/// Whether evaluating `expr` over any row cannot fail: reads, casts that cannot fail
/// (`event_type = 0` over an `INT` column compares it cast to `BIGINT`), comparisons of
/// those (their types are equal once planned), and their `AND`, `OR`, `NOT` and
/// `IS [NOT] NULL`.
fn cannot_fail(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> DFResult<bool> {
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        let safe_op = matches!(
            binary.op(),
            Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq
                | Operator::And
                | Operator::Or
                | Operator::IsDistinctFrom
                | Operator::IsNotDistinctFrom
        );
        return Ok(safe_op
            && cannot_fail(binary.left(), schema)?
            && cannot_fail(binary.right(), schema)?);
    }
    if let Some(cast) = expr.downcast_ref::<CastExpr>() {
        let from = cast.expr().data_type(schema)?;
        return Ok(widens(&from, cast.cast_type()) && cannot_fail(cast.expr(), schema)?);
    }
    if expr.is::<NotExpr>() || expr.is::<IsNullExpr>() || expr.is::<IsNotNullExpr>() {
        for child in expr.children() {
            if !cannot_fail(child, schema)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    Ok(reads_only(expr))
}

/// Whether every value of `from` casts to `to` without error: an integer to a wider one
/// that holds all its values, or a number to a float.
fn widens(from: &DataType, to: &DataType) -> bool {
    if !from.is_integer() {
        return from == to;
    }
    if !to.is_integer() {
        return matches!(to, DataType::Float32 | DataType::Float64);
    }
    let (Some(from_width), Some(to_width)) = (from.primitive_width(), to.primitive_width()) else {
        return false;
    };
    if from.is_signed_integer() == to.is_signed_integer() {
        to_width >= from_width
    } else {
        // Unsigned into a strictly wider signed integer.
        to.is_signed_integer() && to_width > from_width
    }
}

impl fmt::Display for ZippedCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.case.fmt(f)
    }
}

impl PhysicalExpr for ZippedCase {
    fn return_field(&self, input_schema: &Schema) -> DFResult<FieldRef> {
        self.case.return_field(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> DFResult<ColumnarValue> {
        let rows = batch.num_rows();
        let case = self.case()?;
        let data_type: DataType = case.data_type(&batch.schema())?;
        let mut picked: ArrayRef = match case.else_expr() {
            Some(otherwise) => otherwise.evaluate(batch)?.into_array(rows)?,
            None => new_null_array(&data_type, rows),
        };
        // From the last branch to the first, so the first condition that holds wins.
        for (when, then) in case.when_then_expr().iter().rev() {
            let mask = when.evaluate(batch)?.into_array(rows)?;
            let Some(mask) = mask.as_boolean_opt() else {
                return Err(DataFusionError::Execution(format!(
                    "the condition {when} is {}, not BOOLEAN",
                    mask.data_type()
                )));
            };
            if !mask.has_true() {
                continue;
            }
            let then = then.evaluate(batch)?;
            picked = if mask.null_count() == 0 && !mask.has_false() {
                then.into_array(rows)?
            } else {
                match then {
                    ColumnarValue::Array(values) => zip(mask, &values, &picked)?,
                    ColumnarValue::Scalar(value) => zip(mask, &value.to_scalar()?, &picked)?,
                }
            };
        }
        Ok(ColumnarValue::Array(picked))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.case.children()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> DFResult<Arc<dyn PhysicalExpr>> {
        let case = self.case.clone().with_new_children(children)?;
        if case.is::<CaseExpr>() {
            Ok(Arc::new(Self { case }))
        } else {
            Ok(case)
        }
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.case.fmt_sql(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array, StructArray};
    use datafusion::arrow::buffer::NullBuffer;
    use datafusion::arrow::datatypes::Field;
    use datafusion::common::DFSchema;
    use datafusion::functions::core::expr_fn::get_field;
    use datafusion::logical_expr::{cast, col, lit, when};

    use crate::test_random::Random;

    /// Rows shaped like the published Nexmark table: an event type (sometimes NULL) and
    /// three struct columns with a `t` field, each NULL now and then, fields too.
    fn batch(random: &mut Random, rows: usize) -> RecordBatch {
        let mut nullable_longs = |nulls: u64| -> ArrayRef {
            Arc::new(Int64Array::from_iter((0..rows).map(|_| {
                let v = random.below(1000) as i64;
                (random.below(100) >= nulls).then_some(v)
            })))
        };
        let structs: Vec<ArrayRef> = (0..3)
            .map(|_| {
                let t = nullable_longs(10);
                let valid: Vec<bool> = (0..rows).map(|i| i % 7 != 3).collect();
                Arc::new(StructArray::new(
                    vec![Field::new("t", DataType::Int64, true)].into(),
                    vec![t],
                    Some(NullBuffer::from(valid)),
                )) as ArrayRef
            })
            .collect();
        let kinds: ArrayRef =
            Arc::new(Int32Array::from_iter((0..rows).map(|_| {
                (random.below(10) != 0).then(|| random.below(4) as i32)
            })));
        let mut columns = vec![kinds];
        columns.extend(structs);
        let fields: Vec<Field> = ["kind", "a", "b", "c"]
            .iter()
            .zip(&columns)
            .map(|(name, c)| Field::new(*name, c.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn zipped_cases_equal_datafusion_cases() {
        let mut random = Random(0x5eed_ca5e);
        let sample = batch(&mut random, 1);
        let schema = DFSchema::try_from(sample.schema().as_ref().clone()).unwrap();
        let field = |c: &str| get_field(col(c), "t");
        let cases = [
            // The Nexmark event time.
            when(col("kind").eq(lit(0)), field("a"))
                .when(col("kind").eq(lit(1)), field("b"))
                .otherwise(field("c"))
                .unwrap(),
            // An INT compared with a BIGINT literal: through a cast that cannot fail.
            when(
                cast(col("kind"), DataType::Int64).eq(lit(1_i64)),
                field("c"),
            )
            .otherwise(field("a"))
            .unwrap(),
            // No ELSE: NULL where no condition holds.
            when(col("kind").eq(lit(2)), field("b")).end().unwrap(),
            // Literals, overlapping conditions (the first wins), NULL tests.
            when(
                col("kind").lt(lit(2)).or(col("kind").is_null()),
                lit(-1_i64),
            )
            .when(col("kind").lt_eq(lit(3)), field("a"))
            .otherwise(lit(7_i64))
            .unwrap(),
        ];
        for expr in cases {
            let plain =
                crate::expr::compile_unzipped(std::slice::from_ref(&expr), &schema).unwrap();
            let zipped = crate::expr::compile(&[expr], &schema).unwrap();
            assert!(zipped[0].is::<ZippedCase>(), "{}", zipped[0]);
            assert_eq!(plain[0].to_string(), zipped[0].to_string());
            for rows in [0, 1, 5, 100, 1000] {
                let input = batch(&mut random, rows);
                let want = plain[0].evaluate(&input).unwrap().into_array(rows).unwrap();
                let got = zipped[0]
                    .evaluate(&input)
                    .unwrap()
                    .into_array(rows)
                    .unwrap();
                assert_eq!(&want, &got, "{} over {rows} rows", zipped[0]);
            }
        }
    }

    #[test]
    fn only_casts_that_hold_every_value_widen() {
        use DataType::*;
        for (from, to) in [
            (Int32, Int64),
            (UInt8, Int16),
            (UInt32, UInt64),
            (Int64, Float64),
        ] {
            assert!(widens(&from, &to), "{from} to {to}");
        }
        for (from, to) in [
            (Int64, Int32),
            (UInt32, Int32),
            (Int8, UInt64),
            (Utf8, Int64),
        ] {
            assert!(!widens(&from, &to), "{from} to {to}");
        }
    }

    #[test]
    fn a_case_whose_branch_can_fail_is_left_to_datafusion() {
        let sample = batch(&mut Random(1), 1);
        let schema = DFSchema::try_from(sample.schema().as_ref().clone()).unwrap();
        // `10 / kind` fails where kind = 0, which the first branch keeps it from seeing.
        let guarded = when(col("kind").eq(lit(0)), lit(0))
            .when((lit(10) / col("kind")).gt(lit(3)), lit(1))
            .otherwise(lit(2))
            .unwrap();
        // A narrowing cast can fail too (on overflow).
        let narrowed = when(col("kind").eq(lit(0)), lit(0))
            .when(cast(col("kind"), DataType::Int8).eq(lit(1_i8)), lit(1))
            .otherwise(lit(2))
            .unwrap();
        for expr in [guarded, narrowed] {
            let compiled = crate::expr::compile(&[expr], &schema).unwrap();
            assert!(compiled[0].is::<CaseExpr>(), "{}", compiled[0]);
        }
    }
}
