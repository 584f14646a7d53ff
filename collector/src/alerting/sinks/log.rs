//! The log sink: every alert as one structured `tracing` event (target `lambdawatch::alert`),
//! `WARN` when firing, `INFO` when resolved. It cannot fail, so it is always safe to configure.

use super::{DeliveryError, Sink};
use crate::alerting::alert::{Alert, AlertStatus};

#[derive(Clone, Copy, Debug, Default)]
pub struct LogSink;

impl Sink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    async fn deliver(&self, alerts: &[Alert]) -> Result<(), DeliveryError> {
        for a in alerts {
            let label = |k: &str| a.labels.get(k).map_or("", String::as_str);
            let e = &a.evidence;
            macro_rules! emit {
                ($level:ident) => {
                    tracing::$level!(
                        target: "lambdawatch::alert",
                        status = a.status.as_str(),
                        fingerprint = %a.fingerprint,
                        alertname = label("alertname"),
                        slo = label("slo"),
                        severity = label("severity"),
                        function = label("function"),
                        version = label("version"),
                        region = label("region"),
                        account = label("account"),
                        sli = e.sli,
                        objective = e.objective,
                        burn_rate_long = ?e.burn_rate_long,
                        burn_rate_short = ?e.burn_rate_short,
                        budget_consumed = e.budget_consumed,
                        good = e.good,
                        total = e.total,
                        runbook_url = %a.runbook_url,
                        "{}",
                        a.summary
                    )
                };
            }
            match a.status {
                AlertStatus::Firing => emit!(warn),
                AlertStatus::Resolved => emit!(info),
            }
        }
        Ok(())
    }
}
