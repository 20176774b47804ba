import asyncio
import json
import websockets

async def websocket_client():
    uri = "ws://localhost:8000/ws"
    
    async with websockets.connect(uri) as websocket:
        # Send a message
        message = {
            "type": "chat",
            "content": "Hello, AI assistant!",
            "session_id": "demo_session"
        }
        await websocket.send(json.dumps(message))
        
        # Receive streaming response
        async for response in websocket:
            data = json.loads(response)
            if data["type"] == "stream_data":
                print(data["data"]["content"], end="", flush=True)
            elif data["type"] == "stream_complete":
                print("\n[Stream completed]")
                break

asyncio.run(websocket_client())
