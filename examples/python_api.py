import asyncio
from agent_template import AgentLoop, StreamGenerator, SessionManager
from agent_template.config import settings
from agent_template.services.model_provider import ModelManager

async def main():
    # Initialize core components
    agent_loop = AgentLoop()
    session_manager = SessionManager()
    model_manager = ModelManager()
    stream_gen = StreamGenerator()
    
    # Create a session
    session = await session_manager.create_session(user_id="user_123")
    
    # Create and process a task
    task = await agent_loop.create_task({
        "type": "chat",
        "message": "Hello, what can you help me with?",
        "session_id": session.session_id
    })
    
    # Stream the response
    async for chunk in stream_gen.process_stream("stream_1", task):
        print(chunk.content, end="", flush=True)
    
    # Start the agent loop
    await agent_loop.run()

# Run the example
asyncio.run(main())
