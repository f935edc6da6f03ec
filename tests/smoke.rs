use buddy::prelude::*;

#[derive(Clone, Debug, Default)]
struct Echo {
    session: Option<String>,
}

impl Member for Echo {
    fn attach(&mut self, context: &MemberContext<'_>) {
        self.session = Some(context.session_id.to_owned());
    }
}

#[workflow(description = "Echo a topic.")]
#[derive(Debug)]
pub struct EchoWorkflow {
    #[member(default = Echo::default())]
    echo: Echo,
    #[field(default = 3)]
    times: u32,
}

#[workflow]
impl EchoWorkflow {
    /// Echo.
    async fn run(&mut self, topic: String, #[arg(default = 2)] n: u32) -> Result<RunResponse> {
        Ok(RunResponse::from_text(format!(
            "{topic} {n} {}",
            self.times
        )))
    }
}

#[tokio::test]
async fn smoke() {
    let mut wf = EchoWorkflow::builder()
        .storage(MemoryStorage::new())
        .build()
        .unwrap();
    let r = wf.run("hi".into(), 1).await.unwrap();
    assert_eq!(r.text(), "hi 1 3");
    assert!(wf.echo.session.is_some());
}
