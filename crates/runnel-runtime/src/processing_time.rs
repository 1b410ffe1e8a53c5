//! [`ProcessingTime`]: the clock `PROCTIME()` reads in one task, handed to the operators
//! when they are built.
//!
//! A job on processing time sends the processing clock as its watermark before each
//! batch; the task running a chain of operators sets its [`ProcessingTime`] from that
//! watermark, and every `PROCTIME()` its operators evaluate reads it, so rows and windows
//! agree exactly on what time it is (and a replayed clock makes it exact in tests).
//! Elsewhere `PROCTIME()` reads the system clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{create_udf, ColumnarValue, Expr, Volatility};

/// Not set: read the system clock.
const UNSET: i64 = i64::MIN;

/// The processing time of the rows a task is working on, in ms since the epoch. Clones
/// share one clock.
#[derive(Debug, Clone)]
pub struct ProcessingTime(Arc<AtomicI64>);

impl Default for ProcessingTime {
    fn default() -> Self {
        Self(Arc::new(AtomicI64::new(UNSET)))
    }
}

impl ProcessingTime {
    /// The rows processed from now on were read at `now`.
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::Relaxed);
    }

    /// The time set last, or the system clock when none was.
    pub fn now(&self) -> i64 {
        match self.0.load(Ordering::Relaxed) {
            UNSET => system_now(),
            now => now,
        }
    }

    /// `expr` with every `PROCTIME()` call reading this clock.
    pub fn bind(&self, expr: &Expr) -> datafusion::error::Result<Expr> {
        let needs = expr.exists(|e| Ok(is_proctime(e)))?;
        if !needs {
            return Ok(expr.clone());
        }
        let clock = self.clone();
        let time_type = DataType::Timestamp(
            TimeUnit::Millisecond,
            Some(runnel_sql::parser::LTZ_TIME_ZONE.into()),
        );
        let udf = Arc::new(create_udf(
            runnel_sql::functions::PROCTIME,
            vec![],
            time_type,
            Volatility::Volatile,
            Arc::new(move |_: &[ColumnarValue]| {
                Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
                    Some(clock.now()),
                    Some(runnel_sql::parser::LTZ_TIME_ZONE.into()),
                )))
            }),
        ));
        expr.clone()
            .transform(|e| {
                Ok(if is_proctime(&e) {
                    Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                        udf.clone(),
                        vec![],
                    )))
                } else {
                    Transformed::no(e)
                })
            })
            .map(|t| t.data)
    }
}

fn is_proctime(expr: &Expr) -> bool {
    matches!(expr, Expr::ScalarFunction(f) if f.func.name() == runnel_sql::functions::PROCTIME)
}

/// The system clock in ms since the epoch.
pub fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::ScalarUDF;

    #[test]
    fn a_bound_proctime_reads_the_clock_it_was_bound_to() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![1, 2]))])
                .unwrap();
        let proctime: Arc<ScalarUDF> = Arc::new(
            runnel_sql::functions::flink_functions()
                .into_iter()
                .find(|f| f.name() == runnel_sql::functions::PROCTIME)
                .unwrap(),
        );
        let call = Expr::ScalarFunction(ScalarFunction::new_udf(proctime, vec![]));
        let clock = ProcessingTime::default();
        let bound = clock.bind(&call).unwrap();
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let physical = crate::expr::compile(&[bound], &df_schema).unwrap();
        let read = |clock: &ProcessingTime| {
            clock.set(1_000);
            let value = physical[0].evaluate(&batch).unwrap();
            match value {
                ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(Some(t), _)) => t,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(read(&clock), 1_000);
        clock.set(2_000);
        let value = physical[0].evaluate(&batch).unwrap();
        assert!(matches!(
            value,
            ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(Some(2_000), _))
        ));
    }
}
